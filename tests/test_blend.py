"""Pasting works on the mask's support only, with the same pixels as a full-frame paste."""

import cv2
import numpy as np

from hygie_w2l.blend import paste
from hygie_w2l.geometry import SquareBox, box_affine, generator_mask, invert, warp


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur((rng.random((360, 640, 3)) * 255).astype(np.uint8), (21, 21), 6)
    m = box_affine(SquareBox(330.0, 190.0, 160.0), 96)  # a Wav2Lip face crop
    to_face = m @ np.vstack([invert(box_affine(SquareBox(330.0, 230.0, 70.0), 128)),
                             [0, 0, 1]])
    mask = warp(generator_mask(128), to_face, (96, 96))  # the mouth: part of the square
    crop = cv2.GaussianBlur((rng.random((96, 96, 3)) * 255).astype(np.uint8), (7, 7), 2)
    return frame, crop, mask, m


def test_feather_paste_equals_a_full_frame_alpha_blend() -> None:
    frame, crop, mask, m = _scene()
    assert 0.05 < (mask > 1e-3).mean() < 0.7  # the mask covers only part of the crop
    inv = invert(m)
    size = (frame.shape[1], frame.shape[0])
    full = cv2.warpAffine(crop, inv, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE).astype(float)
    alpha = cv2.warpAffine(mask.astype(np.float32), inv, size, flags=cv2.INTER_LINEAR)[..., None]
    expected = alpha * full + (1 - alpha) * frame
    got = paste(frame, crop, mask, m, "feather", colour_correct=False)
    assert np.abs(got - expected).max() <= 1.0
    assert np.abs(got.astype(int) - frame).max() > 30  # it did paste something


def test_poisson_changes_only_the_mask_region() -> None:
    frame, crop, mask, m = _scene()
    got = paste(frame, crop, mask, m, "poisson")
    region = cv2.warpAffine(mask.astype(np.float32), invert(m),
                            (frame.shape[1], frame.shape[0])) > 1e-3
    assert np.array_equal(got[~region], frame[~region])
    assert np.abs(got[region].astype(int) - frame[region]).mean() > 3
