"""One geometry for training and rendering: crops, masks and their paste-back transforms.

Every crop is an affine warp of the frame described by a 2 x 3 matrix ``M`` (frame -> crop);
pasting back uses its inverse, so there is no second crop convention anywhere.

* Wav2Lip face crop: a square box around the face landmarks, with the official extra bottom
  padding that keeps the chin inside, resized to 96 px; the generator sees its lower half
  masked (rows 48..95 zeroed), as in the official recipe.
* Mouth crop (FiLM U-Net): a square centred on the lips, side = lips' extent x (1 + 0.35).
* Mouth mask: the outer-lip hull, dilated and feathered, in crop or frame coordinates; the
  inner-mouth (teeth/tongue) polygon is the inner lip ring.

Nothing the generator sees may depend on how open the current frame's mouth is, or it learns
to copy the opening from the picture instead of taking it from the audio (measured: a FiLM
U-Net fed the per-frame lip box and lip-hull mask "followed" the mouth as well with the
wrong audio, r = 0.95, as with the right one). So the boxes are placed from the eyes, which
do not move with the jaw: :class:`BoxCalibration` holds, per video, the median position and
size of the face box and of the lip box relative to the eye corners (in units of the
inter-ocular distance); each frame's box is that placement applied to its own eyes. The
generator's input mask is a fixed region of the crop (:func:`generator_mask`); the per-frame
lip hull is used only to weight the loss and to measure.
* HD mouth patch: the native-resolution mouth, aligned by a similarity transform that puts
  the mouth corners at fixed points of a canonical frame (for the retrieval index).
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from hygie_w2l.landmarks import (
    farthest_pairs,
    mesh_connections,
    mouth_axes_of,
    outer_inner_rings,
    outer_rings,
)
from hygie_w2l.types import Affine, Landmarks

FACE_CROP_PX = 96  # the official generator's input size
FACE_PAD_BOTTOM = 0.06  # official `--pads 0 10 0 0`: ~10 px under the chin of a ~170 px box
FACE_PAD_SIDES = 0.04
MOUTH_CROP_MARGIN = 0.35  # side = lips' extent x (1 + margin)
HD_CORNER_SPAN = 0.5  # mouth corners sit at 25 % and 75 % of the canonical width
HD_ASPECT = 0.75  # canonical patch height / width


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
    """This frame's own face box (it moves with the jaw: use it to calibrate, not to crop)."""
    return _face_box(landmarks)


def _face_box(landmarks: Landmarks) -> SquareBox:
    """Square face box from all landmarks, padded at the bottom (chin) like the official crop."""
    return SquareBox.from_array(_face_boxes(landmarks[None])[0])


def _face_boxes(landmarks: np.ndarray) -> np.ndarray:
    """:func:`_face_box` of N frames (N, P, 2): (N, 3) cx, cy, side."""
    x0, y0 = landmarks[..., 0].min(1), landmarks[..., 1].min(1)
    x1, y1 = landmarks[..., 0].max(1), landmarks[..., 1].max(1)
    w, h = x1 - x0, y1 - y0
    x0, x1 = x0 - FACE_PAD_SIDES * w, x1 + FACE_PAD_SIDES * w
    y1 = y1 + FACE_PAD_BOTTOM * h
    side = np.maximum(x1 - x0, y1 - y0)
    return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, side], 1).astype(np.float64)


def mouth_box(landmarks: Landmarks) -> SquareBox:
    """This frame's own lip box: centred on the lips, side = their larger extent x 1.35
    (it moves with the mouth: use it to calibrate, not to crop)."""
    return SquareBox.from_array(mouth_boxes(landmarks[None])[0])


def mouth_boxes(landmarks: np.ndarray) -> np.ndarray:
    """:func:`mouth_box` of N frames (N, P, 2): (N, 3) cx, cy, side."""
    outer = outer_rings(landmarks)
    x0, y0 = outer[..., 0].min(1), outer[..., 1].min(1)
    x1, y1 = outer[..., 0].max(1), outer[..., 1].max(1)
    side = np.maximum(x1 - x0, y1 - y0) * (1 + MOUTH_CROP_MARGIN)
    return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, side], 1).astype(np.float64)


@functools.cache
def eye_indices() -> tuple[list[int], list[int]]:
    """MediaPipe's eye rings (image-left eye first: the person's right eye)."""
    mesh = mesh_connections()
    return (sorted({i for e in mesh.FACEMESH_RIGHT_EYE for i in e}),
            sorted({i for e in mesh.FACEMESH_LEFT_EYE for i in e}))


def eye_corners(landmarks: np.ndarray) -> np.ndarray:
    """(N, 2, 2, 2) for the landmarks of N frames (N, P, 2+): each eye's two corners (its
    ring's farthest pair), the image-left eye first."""
    lm = landmarks[..., :2]
    if lm.shape[1] == 68:
        rings = [lm[:, 36:42], lm[:, 42:48]]  # iBUG layout
    else:
        rings = [lm[:, idx] for idx in eye_indices()]
    out = np.stack([farthest_pairs(r) for r in rings], 1)
    swap = out[:, 0].mean(1)[:, 0] > out[:, 1].mean(1)[:, 0]
    out[swap] = out[swap][:, ::-1]
    return out


def eye_frames(landmarks: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(anchor, u, v, iod) of N frames (N, P, 2+): the eyes' midpoints (N, 2), the unit
    axes from the image-left eye to the other (N, 2), their perpendiculars pointing down
    the face (N, 2), and the inter-ocular distances (N,) in px. Eye corners do not move
    when the mouth opens or the eyes blink."""
    corners = eye_corners(landmarks).astype(np.float64)
    left, right = corners[:, 0].mean(1), corners[:, 1].mean(1)
    iod = np.linalg.norm(right - left, axis=1)
    u = (right - left) / np.maximum(iod, 1e-6)[:, None]
    return (left + right) / 2, u, np.stack([-u[:, 1], u[:, 0]], 1), iod


@dataclasses.dataclass(frozen=True)
class BoxCalibration:
    """Per-video placement of the face and lip boxes relative to the eyes: (along the eye
    axis, down the face, side), in inter-ocular distances; medians over the video's frames."""

    face: tuple[float, float, float]
    mouth: tuple[float, float, float]

    def to_json(self) -> dict[str, list[float]]:
        return {"face": list(self.face), "mouth": list(self.mouth)}

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> BoxCalibration:
        f, m = data["face"], data["mouth"]
        return cls((f[0], f[1], f[2]), (m[0], m[1], m[2]))


def _relative(boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, 3) boxes (cx, cy, side) in their frames' eye coordinates (iod units)."""
    anchor, u, v, iod = eye_frames(landmarks)
    d = boxes[:, :2] - anchor
    return np.stack([(d * u).sum(1) / iod, (d * v).sum(1) / iod, boxes[:, 2] / iod], 1)


def calibrate_boxes(landmarks: np.ndarray, valid: np.ndarray) -> BoxCalibration:
    """Median eye-relative placement of the face and lip boxes over the valid frames."""
    idx = np.flatnonzero(valid)
    lm = landmarks[idx]
    face = np.median(_relative(_face_boxes(lm), lm), axis=0)
    mouth = np.median(_relative(mouth_boxes(lm), lm), axis=0)
    return BoxCalibration(tuple(map(float, face)), tuple(map(float, mouth)))  # type: ignore[arg-type]


def placed_boxes(landmarks: np.ndarray, rel: tuple[float, float, float]) -> np.ndarray:
    """(N, 3) a calibrated box (cx, cy, side) placed on the eyes of N frames (N, P, 2)."""
    anchor, u, v, iod = eye_frames(landmarks)
    centre = anchor + rel[0] * iod[:, None] * u + rel[1] * iod[:, None] * v
    return np.column_stack([centre, rel[2] * iod])


def placed_box(landmarks: Landmarks, rel: tuple[float, float, float]) -> SquareBox:
    """A calibrated box placed on this frame's eyes."""
    return SquareBox.from_array(placed_boxes(landmarks[None], rel)[0])


@functools.cache
def generator_mask(size_px: int) -> np.ndarray:
    """The FiLM U-Net's fixed input mask: (S, S) float32, 1 where the mouth is generated
    (read-only: one array per size is shared).

    An ellipse over the lips at their widest and the jaw below them; the top of the crop
    (nose base, upper lip's skin) and the outer cheeks stay visible as context.
    """
    s = size_px
    mask = np.zeros((s, s), np.uint8)
    cv2.ellipse(mask, (s // 2, int(0.58 * s)), (int(0.47 * s), int(0.40 * s)), 0, 0, 360,
                (255,), -1)
    out: np.ndarray = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), s / 40)
    out.flags.writeable = False
    return out


def box_affine(box: SquareBox, size_px: int) -> Affine:
    """frame -> crop matrix mapping ``box`` onto a ``size_px`` square."""
    s = size_px / box.side
    return np.array([[s, 0, size_px / 2 - s * box.cx], [0, s, size_px / 2 - s * box.cy]])


def translated(m: Affine, origin: np.ndarray | tuple[float, float]) -> Affine:
    """``m`` for points given relative to ``origin`` (x, y): p -> m (p + origin)."""
    out = np.array(m, np.float64)
    out[:, 2] += out[:, :2] @ np.asarray(origin, np.float64)
    return out


def invert(m: Affine) -> Affine:
    return cv2.invertAffineTransform(m.astype(np.float64))


def warp(frame: np.ndarray, m: Affine, size: tuple[int, int]) -> np.ndarray:
    """Crop by ``m`` into (h, w) = size; outside the frame, edge pixels are repeated."""
    h, w = size
    return cv2.warpAffine(frame, m, (w, h), flags=warp_interpolation(m),
                          borderMode=cv2.BORDER_REPLICATE)


def warp_interpolation(m: Affine) -> int:
    """The interpolation a crop by ``m`` uses (area when it shrinks)."""
    return cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR


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
    """Similarity (rotation, uniform scale, shift) putting this frame's own mouth at the
    canonical mouth frame's fixed points: :func:`outer_ring_affine` of its outer lip ring."""
    return hd_affines(landmarks[None], patch_hw)[0]


def hd_affines(landmarks: np.ndarray, patch_hw: tuple[int, int]) -> np.ndarray:
    """:func:`hd_affine` of N frames (N, P, 2): (N, 2, 3)."""
    return _ring_affines(outer_rings(landmarks), patch_hw)


def outer_ring_affine(outer: np.ndarray, patch_hw: tuple[int, int]) -> Affine:
    """:func:`hd_affine` of an outer lip ring (K, 2) alone."""
    return _ring_affines(outer[None], patch_hw)[0]


def _ring_affines(outer: np.ndarray, patch_hw: tuple[int, int]) -> np.ndarray:
    """(N, 2, 3): the similarity OpenCV fits (RANSAC, then least squares on its inliers)
    taking each ring's corners to 25 % and 75 % of the width at half the height, and its
    centroid to their midpoint. The centroid is not on the corner line, so this is not the
    exact corner similarity (corner_affines): fitted through it, the mouth sits nearer the
    patch's middle, and the lips path's mouths come out sharper (inner-mouth sharpness
    0.88 / 0.82 of the real video's vs 0.81 / 0.74 with the exact corner similarity on
    the synthetic clip / talk_selfie_24s, scripts/bench_eval.py)."""
    left, right = mouth_corners_of(outer)
    h, w = patch_hw
    dst = np.array([[w * (1 - HD_CORNER_SPAN) / 2, h / 2], [w * (1 + HD_CORNER_SPAN) / 2, h / 2],
                    [w / 2, h / 2]], np.float32)
    src = np.stack([left, right, outer.mean(axis=1)], 1).astype(np.float32)
    return np.stack([cv2.estimateAffinePartial2D(p, dst)[0] for p in src])


def mouth_corners_of(outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) mouth corners of N outer lip rings (N, K, 2), each (N, 2): each ring's
    extremes along its corner-to-corner axis, image-left first."""
    centre, u, _ = mouth_axes_of(outer)
    proj = np.einsum("nkd,nd->nk", outer - centre[:, None], u)
    return centre + proj.min(1)[:, None] * u, centre + proj.max(1)[:, None] * u


def corner_affines(left: np.ndarray, right: np.ndarray, patch_hw: tuple[int, int]
                   ) -> np.ndarray:
    """The similarities (rotation, uniform scale, shift) frame -> canonical mouth frame that
    put the corners ``left``, ``right`` (N, 2) each at their fixed points (25 % and 75 % of
    the width, half the height): (N, 2, 3)."""
    h, w = patch_hw
    left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
    d = right - left
    width = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
    s = HD_CORNER_SPAN * w / width
    c, n = d[:, 0] / width, d[:, 1] / width  # cos, sin of the corner line's angle
    rot = s[:, None, None] * np.stack([np.stack([c, n], 1), np.stack([-n, c], 1)], 1)
    mid = (left + right) / 2
    shift = np.array([w / 2, h / 2]) - np.einsum("nij,nj->ni", rot, mid)
    return np.concatenate([rot, shift[:, :, None]], axis=2)


MEDIAPIPE_NOSE = (1, 2, 98, 327)  # nose tip, under the nose, the two wings
IBUG_NOSE = (30, 33, 31, 35)


def rigid_points(landmarks: np.ndarray) -> np.ndarray:
    """Points that move with the skull, not the jaw: the eye corners and the nose (tip,
    base, wings): (N, 8, 2) for the landmarks of N frames (N, P, 2+)."""
    nose = IBUG_NOSE if landmarks.shape[1] == 68 else MEDIAPIPE_NOSE
    return np.concatenate([eye_corners(landmarks).reshape(len(landmarks), -1, 2),
                           landmarks[:, list(nose), :2]], axis=1).astype(np.float64)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) taking points ``src``
    to ``dst`` (Umeyama 1991): (K, 2) each -> a 2x3 matrix; (N, K, 2) stacks (either may
    be one (K, 2) set for all) -> (N, 2, 3)."""
    one = src.ndim == 2 and dst.ndim == 2
    src, dst = np.broadcast_arrays(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    src, dst = src.reshape(-1, *src.shape[-2:]), dst.reshape(-1, *dst.shape[-2:])
    ms, md = src.mean(1), dst.mean(1)
    a, b = src - ms[:, None], dst - md[:, None]
    cov = np.einsum("nki,nkj->nij", b, a) / src.shape[1]
    u, s, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    d = np.stack([np.ones_like(sign), sign], 1)  # the diagonal of D
    rot = (u * d[:, None, :]) @ vt
    scale = (s * d).sum(1) / np.maximum((a ** 2).sum((1, 2)) / src.shape[1], 1e-12)
    m = scale[:, None, None] * rot
    out = np.concatenate([m, (md - np.einsum("nij,nj->ni", m, ms))[:, :, None]], axis=2)
    return out[0] if one else out


@dataclasses.dataclass(frozen=True)
class MouthAnchor:
    """Per video: where the mouth corners sit relative to the skull (eyes and nose), as
    medians over the video's frames, so a frame's own mouth does not move them.

    Measured on talk_selfie_24s's held-out frames: placed by a similarity on the eyes and
    nose, the corners' midpoint lands 0.055 mouth widths from the real one (0.074 from the
    eyes alone); what remains is mostly head motion, not speech (its correlation with the
    mouth's opening is below 0.3)."""

    rigid: np.ndarray  # (8, 2) the reference skull points
    corners: np.ndarray  # (2, 2) the mouth corners in the same coordinates (left, right)

    @classmethod
    def calibrate(cls, landmarks: np.ndarray, valid: np.ndarray) -> MouthAnchor:
        lm = landmarks[np.flatnonzero(valid)]
        rigid = rigid_points(lm)
        reference = rigid[0] - rigid[0].mean(0)
        m = similarity_fit(rigid, reference)  # each frame -> the reference
        corners = np.stack(mouth_corners_of(outer_rings(lm)), 1)  # (N, 2, 2)
        return cls(np.median(_transform_each(rigid, m), axis=0),
                   np.median(_transform_each(corners, m), axis=0))

    def place(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated corners placed on the skulls of N frames (N, P, 2): (left,
        right), each (N, 2)."""
        m = similarity_fit(self.rigid, rigid_points(landmarks))
        placed = _transform_each(np.broadcast_to(self.corners, (len(m), 2, 2)), m)
        return placed[:, 0].astype(np.float64), placed[:, 1].astype(np.float64)


def _transform_each(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """:func:`transform_points` of N point sets (N, K, 2) by their N matrices (float32)."""
    return (np.einsum("nkj,nij->nki", points, m[:, :, :2]) + m[:, None, :, 2]
            ).astype(np.float32)


def polygon_mask(points: np.ndarray, size: tuple[int, int], dilate_px: int = 0,
                 feather_px: int = 0) -> np.ndarray:
    """(h, w) float32 mask in [0, 1] of the convex hull of ``points``, dilated and feathered."""
    h, w = size
    mask: np.ndarray = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, (255,))
    if dilate_px > 0:  # a convex hull grown by a disc: its outline drawn that thick
        cv2.polylines(mask, [hull], True, (255,), thickness=2 * dilate_px + 1)
    out: np.ndarray = mask.astype(np.float32) / 255.0
    if feather_px > 0:
        out = cv2.GaussianBlur(out, (0, 0), feather_px / 2.0)
    return out


def mask_reach(dilate_px: int, feather_px: int) -> int:
    """How far (px) beyond its points' hull :func:`polygon_mask` can be non-zero: the
    dilation, a pixel of the points' rounding and one of the thick outline's, and the
    radius of the feather's Gaussian (OpenCV's kernel for a float32 image: 8 sigma + 1)."""
    radius = (int(round(feather_px / 2.0 * 8 + 1)) | 1) // 2 if feather_px > 0 else 0
    return dilate_px + 2 + radius


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
