"""The install is deterministic: exactly one distribution owns cv2, with the features we use."""

from importlib import metadata

import cv2
import numpy as np

OPENCV_WHEELS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                 "opencv-contrib-python-headless")


def test_exactly_one_opencv_distribution_is_installed() -> None:
    installed = []
    for name in OPENCV_WHEELS:
        try:
            metadata.distribution(name)
            installed.append(name)
        except metadata.PackageNotFoundError:
            pass
    assert installed == ["opencv-python-headless"], installed


def test_cv2_has_the_functions_we_use() -> None:
    src = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(src, (32, 32), 8, (220, 220, 220), -1)  # a blob: Poisson keeps its edges
    dst = np.full((128, 128, 3), 30, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    out = cv2.seamlessClone(src, dst, mask, (64, 64), cv2.NORMAL_CLONE)
    assert out.shape == dst.shape and out[64, 64].mean() > 120  # the blob came in
    assert (out[:20] == 30).all()  # far from the mask nothing changes
    tri = cv2.Subdiv2D((0, 0, 64, 64))
    tri.insert([(10.0, 10.0), (50.0, 12.0), (30.0, 50.0)])
    assert len(tri.getTriangleList()) >= 1
    assert cv2.remap(src, np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32),
                     cv2.INTER_LINEAR).shape == (4, 4, 3)
