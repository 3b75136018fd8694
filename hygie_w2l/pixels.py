"""The two ways a render holds a frame: BGR (H, W, 3), which the image generators and the
tracker need, and I420 (H * 3 / 2, W): the decoder's own planar YUV 4:2:0, as OpenCV
lays it out (the Y plane, then U, then V).

A path that edits a small region of each frame (the lips path) keeps its frames in I420
from the decoder to the encoder: nothing converts or copies whole frames, half the bytes go
through the pipes, and the pixels it does not edit reach x264 exactly as decoded. It turns
only the region it edits into BGR and back (OpenCV's BT.601 conversion both ways: an
unedited pixel comes back to within a level of where it was)."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from hygie_w2l.geometry import translated
from hygie_w2l.types import Affine

PixelFormat = Literal["bgr24", "yuv420p"]  # ffmpeg's names: what the pipes carry
Roi = tuple[int, int, int, int]  # x1, y1, x2, y2


def frame_shape(height: int, width: int, fmt: PixelFormat) -> tuple[int, ...]:
    """The array shape of one frame of that size and format."""
    return (height, width, 3) if fmt == "bgr24" else (height * 3 // 2, width)


def supports(fmt: PixelFormat, height: int, width: int) -> bool:
    """I420 needs even sizes (its chroma planes are half each side)."""
    return fmt == "bgr24" or (height % 2 == 0 and width % 2 == 0)


def picture_hw(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of the picture a frame of this array shape holds (either format)."""
    return (shape[0], shape[1]) if len(shape) == 3 else (shape[0] * 2 // 3, shape[1])


def frame_hw(frame: np.ndarray) -> tuple[int, int]:
    """(height, width) of the picture a frame of either format holds."""
    return picture_hw(frame.shape)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """The whole picture as BGR (the frame itself when it already is)."""
    return frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)


def align(roi: Roi, frame: np.ndarray) -> Roi:
    """``roi`` grown to even corners on an I420 frame (whole chroma samples), unchanged on
    a BGR one."""
    if frame.ndim == 3:
        return roi
    h, w = frame_hw(frame)
    x1, y1, x2, y2 = roi
    return x1 & ~1, y1 & ~1, min(x2 + (x2 & 1), w), min(y2 + (y2 & 1), h)


def _planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = frame_hw(frame)
    flat = frame.reshape(-1)
    y = flat[:h * w].reshape(h, w)
    u = flat[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)
    v = flat[h * w * 5 // 4:].reshape(h // 2, w // 2)
    return y, u, v


def read_region(frame: np.ndarray, roi: Roi) -> np.ndarray:
    """A BGR copy of the frame's ``roi`` (corners even on I420: :func:`align`)."""
    x1, y1, x2, y2 = roi
    if frame.ndim == 3:
        return frame[y1:y2, x1:x2].copy()
    h, w = y2 - y1, x2 - x1
    y, u, v = _planes(frame)
    small = np.empty(h * w * 3 // 2, np.uint8)
    small[:h * w] = y[y1:y2, x1:x2].reshape(-1)
    small[h * w:h * w * 5 // 4] = u[y1 // 2:y2 // 2, x1 // 2:x2 // 2].reshape(-1)
    small[h * w * 5 // 4:] = v[y1 // 2:y2 // 2, x1 // 2:x2 // 2].reshape(-1)
    return cv2.cvtColor(small.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)


def with_region(frame: np.ndarray, roi: Roi, region: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` whose ``roi`` is the BGR ``region``."""
    x1, y1, x2, y2 = roi
    out = frame.copy()
    if frame.ndim == 3:
        out[y1:y2, x1:x2] = region
        return out
    h, w = y2 - y1, x2 - x1
    small = cv2.cvtColor(region, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    # OpenCV takes each chroma sample from the top-left pixel of its 2x2 block (colour
    # edges alias: the lips' against skin and teeth); take the block's mean colour's, as
    # swscale does (chroma is linear in BGR: the mean's chroma is the chroma's mean)
    means = cv2.resize(region, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    blocks = cv2.resize(means, (w, h), interpolation=cv2.INTER_NEAREST)
    small[h * w:] = cv2.cvtColor(blocks, cv2.COLOR_BGR2YUV_I420).reshape(-1)[h * w:]
    y, u, v = _planes(out)
    y[y1:y2, x1:x2] = small[:h * w].reshape(h, w)
    u[y1 // 2:y2 // 2, x1 // 2:x2 // 2] = small[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)
    v[y1 // 2:y2 // 2, x1 // 2:x2 // 2] = small[h * w * 5 // 4:].reshape(h // 2, w // 2)
    return out


def warp_affine(frame: np.ndarray, m: Affine, size: tuple[int, int],
                flags: int = cv2.INTER_LINEAR) -> np.ndarray:
    """cv2.warpAffine of the frame by ``m`` (frame -> output) into ``size`` (w, h), BGR,
    converting only the part of an I420 frame the output reads."""
    if frame.ndim == 3:
        return cv2.warpAffine(frame, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    w, h = size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    inv = cv2.invertAffineTransform(np.asarray(m, np.float64))
    src = corners @ inv[:, :2].T + inv[:, 2]
    fh, fw = frame_hw(frame)
    x1, y1 = np.floor(src.min(0)).astype(int) - 2
    x2, y2 = np.ceil(src.max(0)).astype(int) + 3
    roi = align((max(int(x1), 0), max(int(y1), 0), min(int(x2), fw), min(int(y2), fh)), frame)
    if roi[2] - roi[0] < 2 or roi[3] - roi[1] < 2:  # all outside: the nearest edge pixels
        return cv2.warpAffine(to_bgr(frame), m, size, flags=flags,
                              borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(read_region(frame, roi), translated(m, roi[:2]), size, flags=flags,
                          borderMode=cv2.BORDER_REPLICATE)
