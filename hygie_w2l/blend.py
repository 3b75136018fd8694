"""Pasting a generated crop back into its frame, through the inverse of the crop's matrix.

Only the mouth region (the feathered lip-hull mask) is pasted, never the whole square, and
the work is done on the mask's bounding rectangle only.

* ``feather``: alpha blend with the feathered mask (fast);
* ``poisson``: OpenCV seamlessClone on the bounding rectangle (no seams, no colour jump).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from hygie_w2l.geometry import Affine, invert

BlendMode = Literal["feather", "poisson"]


def unwarp(crop: np.ndarray, crop_mask: np.ndarray, m: Affine, frame_hw: tuple[int, int]
           ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]] | None:
    """The crop and its mask in frame coordinates, on the mask's bounding rectangle only.

    Returns (patch (h, w, 3) uint8, mask (h, w) float32, (x1, y1, x2, y2)) or None when the
    mask is empty or outside the frame.
    """
    inv = invert(m)
    # Only the mask's support (plus a pixel) is carried to the frame: for Wav2Lip's face
    # crop that is the lower part, not the whole square.
    support = crop_mask > 1e-3
    rows = np.flatnonzero(support.any(axis=1))
    cols = np.flatnonzero(support.any(axis=0))
    if rows.size == 0:
        return None
    s = crop_mask.shape[0]
    a0, a1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, s)
    b0, b1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, s)
    corners = cv2.transform(np.array([[[a0, b0], [a1, b0], [a0, b1], [a1, b1]]], np.float64),
                            inv)[0]
    h, w = frame_hw
    x1, y1 = np.floor(corners.min(axis=0)).astype(int)
    x2, y2 = np.ceil(corners.max(axis=0)).astype(int)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 <= x1 or y2 <= y1:
        return None
    shift = inv.copy()
    shift[:, 2] -= (x1, y1)
    size = (x2 - x1, y2 - y1)
    patch = cv2.warpAffine(crop, shift, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(crop_mask.astype(np.float32), shift, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0,))
    if mask.max() <= 1e-3:
        return None
    return patch, mask, (x1, y1, x2, y2)


def match_colour(patch: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift the patch's mean colour on the mask's rim to the target's (drift correction)."""
    rim = (mask > 0.05) & (mask < 0.6)
    if rim.sum() < 10:
        return patch
    delta = target[rim].astype(np.float32).mean(0) - patch[rim].astype(np.float32).mean(0)
    # a per-channel scalar, rounded and saturated to 0..255 (the stubs miss the Scalar form)
    return cv2.add(patch, (*delta.tolist(), 0.0))  # type: ignore[call-overload]


def paste(frame: np.ndarray, crop: np.ndarray, crop_mask: np.ndarray, m: Affine,
          mode: BlendMode = "feather", colour_correct: bool = True) -> np.ndarray:
    """A copy of ``frame`` with the masked part of ``crop`` pasted where ``m`` took it from.

    frame (H, W, 3) uint8; crop (S, S, 3) uint8; crop_mask (S, S) float32 in [0, 1];
    m: frame -> crop 2x3 matrix.
    """
    placed = unwarp(crop, crop_mask, m, (frame.shape[0], frame.shape[1]))
    if placed is None:
        return frame.copy()
    patch, mask, (x1, y1, _, _) = placed
    return blend_region(frame, patch, mask, (x1, y1), mode, colour_correct)


def blend_region(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray,
                 origin: tuple[int, int], mode: BlendMode = "feather",
                 colour_correct: bool = True) -> np.ndarray:
    """``frame`` with ``patch`` (h, w, 3) blended in by ``mask`` (h, w) in [0, 1] at
    ``origin`` (x, y): the shared last step of the generator's paste and of HD retrieval."""
    x1, y1 = origin
    region = frame[y1:y1 + mask.shape[0], x1:x1 + mask.shape[1]]
    if colour_correct:
        patch = match_colour(patch, region, mask)
    if mode == "poisson":
        return _poisson(frame, patch, mask, (x1, y1))
    out = frame.copy()
    out[y1:y1 + mask.shape[0], x1:x1 + mask.shape[1]] = _mix(patch, region, mask)
    return out


def _mix(a: np.ndarray, b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha * a + (1 - alpha) * b, rounded, for uint8 images and a float mask in [0, 1]."""
    alpha = np.ascontiguousarray(alpha, np.float32)
    return cv2.blendLinear(np.ascontiguousarray(a), np.ascontiguousarray(b), alpha, 1 - alpha)


def _poisson(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray,
             origin: tuple[int, int]) -> np.ndarray:
    binary = (mask > 0.5).astype(np.uint8) * 255
    binary[0, :] = binary[-1, :] = 0  # seamlessClone needs the mask off the patch border
    binary[:, 0] = binary[:, -1] = 0
    if binary.sum() == 0:
        return frame
    x, y, w, h = cv2.boundingRect(binary)
    # the Poisson solve reads the destination only around the mask: give it that region
    # rather than the whole frame (a 4K frame is copied twice otherwise)
    x1, y1 = origin
    region = (slice(y1, y1 + mask.shape[0]), slice(x1, x1 + mask.shape[1]))
    under = np.ascontiguousarray(frame[region])
    cloned = cv2.seamlessClone(patch, under, binary, (x + w // 2, y + h // 2),
                               cv2.NORMAL_CLONE)
    out = frame.copy()
    # keep the feathered edge: blend the cloned result with the frame by the soft mask
    out[region] = _mix(cloned, under, mask)
    return out
