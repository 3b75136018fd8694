"""One geometry for training and rendering: crops, masks and their paste-back transforms.

Every crop is an affine warp of the frame described by a 2 x 3 matrix ``M`` (frame -> crop);
pasting back uses its inverse, so there is no second crop convention anywhere.

* Wav2Lip face crop: a square box around the face landmarks, with the official extra bottom
  padding that keeps the chin inside, resized to 96 px; the generator sees its lower half
  masked (rows 48..95 zeroed), as in the official recipe.
* Mouth crop (FiLM U-Net): a square centred on the lips, side = lips' extent x (1 + 0.35).
* Mouth mask: the outer-lip hull, dilated and feathered, in crop or frame coordinates; the
  inner-mouth (teeth/tongue) polygon is the inner lip ring.
* HD mouth patch: the native-resolution mouth, aligned by a similarity transform that puts
  the mouth corners at fixed points of a canonical frame (for the retrieval index).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from hygie_w2l.landmarks import outer_inner_rings
from hygie_w2l.types import Landmarks

FACE_CROP_PX = 96  # the official generator's input size
FACE_PAD_BOTTOM = 0.06  # official `--pads 0 10 0 0`: ~10 px under the chin of a ~170 px box
FACE_PAD_SIDES = 0.04
MOUTH_CROP_MARGIN = 0.35  # side = lips' extent x (1 + margin)
HD_CORNER_SPAN = 0.5  # mouth corners sit at 25 % and 75 % of the canonical width
HD_ASPECT = 0.75  # canonical patch height / width

Affine = np.ndarray  # (2, 3) float64: frame -> crop


@dataclasses.dataclass(frozen=True)
class SquareBox:
    """A square in frame pixels: centre and side."""

    cx: float
    cy: float
    side: float

    def as_array(self) -> np.ndarray:
        return np.array([self.cx, self.cy, self.side], np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> SquareBox:
        return cls(float(a[0]), float(a[1]), float(a[2]))

    def xyxy(self) -> tuple[int, int, int, int]:
        h = self.side / 2
        return (int(round(self.cx - h)), int(round(self.cy - h)),
                int(round(self.cx + h)), int(round(self.cy + h)))


def face_box(landmarks: Landmarks) -> SquareBox:
    """Square face box from all landmarks, padded at the bottom (chin) like the official crop."""
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    w, h = x1 - x0, y1 - y0
    x0, x1 = x0 - FACE_PAD_SIDES * w, x1 + FACE_PAD_SIDES * w
    y1 = y1 + FACE_PAD_BOTTOM * h
    side = max(x1 - x0, y1 - y0)
    return SquareBox((x0 + x1) / 2, (y0 + y1) / 2, side)


def mouth_box(landmarks: Landmarks) -> SquareBox:
    """Square centred on the lips; side = the lips' larger extent x (1 + 0.35)."""
    outer, _ = outer_inner_rings(landmarks)
    x0, y0 = outer.min(axis=0)
    x1, y1 = outer.max(axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + MOUTH_CROP_MARGIN)
    return SquareBox((x0 + x1) / 2, (y0 + y1) / 2, side)


def box_affine(box: SquareBox, size_px: int) -> Affine:
    """frame -> crop matrix mapping ``box`` onto a ``size_px`` square."""
    s = size_px / box.side
    return np.array([[s, 0, size_px / 2 - s * box.cx], [0, s, size_px / 2 - s * box.cy]])


def invert(m: Affine) -> Affine:
    return cv2.invertAffineTransform(m.astype(np.float64))


def warp(frame: np.ndarray, m: Affine, size: tuple[int, int]) -> np.ndarray:
    """Crop by ``m`` into (h, w) = size; outside the frame, edge pixels are repeated."""
    h, w = size
    return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_AREA if m[0, 0] < 1
                          else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, m: Affine) -> np.ndarray:
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def lower_half_mask(size_px: int = FACE_CROP_PX) -> np.ndarray:
    """The official recipe's mask: 1 where the generator must draw (rows size/2 .. size-1)."""
    mask = np.zeros((size_px, size_px), np.float32)
    mask[size_px // 2:] = 1.0
    return mask


def hd_patch_size(mouth_width_px: float) -> tuple[int, int]:
    """(h, w) of the canonical HD patch for a typical mouth width, multiples of 8 px."""
    w = int(np.ceil(mouth_width_px / HD_CORNER_SPAN / 8) * 8)
    return int(np.ceil(w * HD_ASPECT / 8) * 8), w


def hd_affine(landmarks: Landmarks, patch_hw: tuple[int, int]) -> Affine:
    """Similarity (rotation, uniform scale, shift) putting the mouth corners at fixed points."""
    from hygie_w2l.landmarks import mouth_axes

    outer, _ = outer_inner_rings(landmarks)
    centre, u, _ = mouth_axes(outer)
    proj = (outer - centre) @ u
    left, right = centre + proj.min() * u, centre + proj.max() * u
    h, w = patch_hw
    dst_left = np.array([w * (1 - HD_CORNER_SPAN) / 2, h / 2])
    dst_right = np.array([w * (1 + HD_CORNER_SPAN) / 2, h / 2])
    m, _ = cv2.estimateAffinePartial2D(np.stack([left, right, centre]).astype(np.float32),
                                       np.stack([dst_left, dst_right,
                                                 (dst_left + dst_right) / 2]).astype(np.float32))
    return m


def polygon_mask(points: np.ndarray, size: tuple[int, int], dilate_px: int = 0,
                 feather_px: int = 0) -> np.ndarray:
    """(h, w) float32 mask in [0, 1] of the convex hull of ``points``, dilated and feathered."""
    h, w = size
    mask: np.ndarray = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, (255,))
    if dilate_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        mask = cv2.dilate(mask, k)
    out: np.ndarray = mask.astype(np.float32) / 255.0
    if feather_px > 0:
        out = cv2.GaussianBlur(out, (0, 0), feather_px / 2.0)
    return out


def mouth_mask(landmarks: Landmarks, m: Affine, size: tuple[int, int],
               dilate_frac: float = 0.15, feather_frac: float = 0.1) -> np.ndarray:
    """The lip hull in the crop given by ``m`` (identity-like m for frame coordinates).

    Dilation and feathering scale with the mouth width, so the mask reads the same at any
    resolution: lips, teeth and the jaw line just around them.
    """
    outer, _ = outer_inner_rings(landmarks)
    pts = transform_points(outer, m)
    width = float(np.ptp(pts[:, 0]))
    return polygon_mask(pts, size, int(round(dilate_frac * width)),
                        int(round(feather_frac * width)))


def inner_mouth_polygon(landmarks: Landmarks) -> np.ndarray:
    """The inner lip ring (teeth and tongue region), (20, 2) float32 frame pixels."""
    return outer_inner_rings(landmarks)[1].astype(np.float32)


IDENTITY = np.array([[1.0, 0, 0], [0, 1.0, 0]])
