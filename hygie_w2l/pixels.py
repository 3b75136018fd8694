"""The two ways a render holds a frame: BGR (H, W, 3), which the image generators and the
tracker need, and I420 (H * 3 / 2, W): the decoder's own planar YUV 4:2:0, as OpenCV
lays it out (the Y plane, then U, then V).

Every render path keeps its frames in I420 from the decoder to the encoder: nothing
converts or copies whole frames, half the bytes go through the pipes, and the pixels it
does not edit reach x264 exactly as decoded. Only what a path reads as a picture (the
generator's crop: :func:`warp_affine`) is turned into BGR; the edits (a generator's paste,
the library mouth's composition) are made on the region in the frame's own planes, with no
colour conversion at all (:func:`read_layers`), a BGR patch entering them by
:func:`layers_like`."""

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
    return roi if frame.ndim == 3 else even(roi, frame_hw(frame))


def even(roi: Roi, hw: tuple[int, int]) -> Roi:
    """``roi`` grown to even corners inside a picture of even size ``hw``."""
    x1, y1, x2, y2 = roi
    return x1 & ~1, y1 & ~1, min(x2 + (x2 & 1), hw[1]), min(y2 + (y2 & 1), hw[0])


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


def to_i420(bgr: np.ndarray) -> np.ndarray:
    """A BGR picture of even size as I420, each chroma sample its 2x2 block's mean colour's,
    as swscale does it (OpenCV's conversion takes the block's top-left pixel's: colour
    edges alias, the lips' against skin and teeth; chroma is linear in BGR, so the mean's
    chroma is the chroma's mean)."""
    h, w = bgr.shape[:2]
    out = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    means = cv2.resize(bgr, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    blocks = cv2.resize(means, (w, h), interpolation=cv2.INTER_NEAREST)
    out[h:] = cv2.cvtColor(blocks, cv2.COLOR_BGR2YUV_I420)[h:]
    return out


# A region can also be edited in the planes the frame holds it in, with no conversion:
# "layers", each an (h / s, w / s[, C]) image at subsampling s. BGR: the (h, w, 3) picture
# alone (s = 1); I420: the luma (h, w) (s = 1) and the chroma, U and V as the two
# channels of one (h / 2, w / 2, 2) image (s = 2). Edits that are linear per channel and
# local (warps, colour shifts, Poisson blends, masks' mixes) are the same in either.

def subsampling(frame: np.ndarray) -> tuple[int, ...]:
    """Each of the frame's layers' subsampling: (1,) for BGR, (1, 2) for I420."""
    return (1,) if frame.ndim == 3 else (1, 2)


def read_layers(frame: np.ndarray, roi: Roi) -> list[np.ndarray]:
    """The frame's ``roi`` (corners even on I420: :func:`align`) as its layers (the luma
    and BGR ones are views: edit copies)."""
    x1, y1, x2, y2 = roi
    if frame.ndim == 3:
        return [frame[y1:y2, x1:x2]]
    y, u, v = _planes(frame)
    half = _chroma(roi)
    return [y[y1:y2, x1:x2], cv2.merge([u[half], v[half]])]


def with_layers(frame: np.ndarray, roi: Roi, layers: list[np.ndarray]) -> np.ndarray:
    """A copy of ``frame`` whose ``roi`` is ``layers`` (:func:`read_layers`'s layout)."""
    x1, y1, x2, y2 = roi
    out = frame.copy()
    if frame.ndim == 3:
        out[y1:y2, x1:x2] = layers[0]
        return out
    y, u, v = _planes(out)
    half = _chroma(roi)
    y[y1:y2, x1:x2] = layers[0]
    u[half], v[half] = layers[1][..., 0], layers[1][..., 1]
    return out


def _chroma(roi: Roi) -> tuple[slice, slice]:
    """The chroma planes' part under ``roi`` (even corners)."""
    x1, y1, x2, y2 = roi
    return slice(y1 // 2, y2 // 2), slice(x1 // 2, x2 // 2)


def shrink(mask: np.ndarray, s: int) -> np.ndarray:
    """A mask (h, w) for a layer of subsampling ``s`` (even sizes): each sample its
    s x s block's mean."""
    if s == 1:
        return mask
    return cv2.resize(mask, (mask.shape[1] // s, mask.shape[0] // s), interpolation=cv2.INTER_AREA)


def layers_like(bgr: np.ndarray, frame: np.ndarray) -> list[np.ndarray]:
    """A BGR picture (a library patch) as layers of the frame's format (I420: its last row
    or column repeated to an even size)."""
    if frame.ndim == 3:
        return [bgr]
    h, w = bgr.shape[:2]
    if h % 2 or w % 2:
        bgr = cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    y, u, v = _planes(to_i420(bgr))
    return [y, cv2.merge([u, v])]


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
