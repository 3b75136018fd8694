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

from hygie_w2l.landmarks import mesh_connections, mouth_axes, outer_inner_rings
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
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    w, h = x1 - x0, y1 - y0
    x0, x1 = x0 - FACE_PAD_SIDES * w, x1 + FACE_PAD_SIDES * w
    y1 = y1 + FACE_PAD_BOTTOM * h
    side = max(x1 - x0, y1 - y0)
    return SquareBox((x0 + x1) / 2, (y0 + y1) / 2, side)


def mouth_box(landmarks: Landmarks) -> SquareBox:
    """This frame's own lip box: centred on the lips, side = their larger extent x 1.35
    (it moves with the mouth: use it to calibrate, not to crop)."""
    outer, _ = outer_inner_rings(landmarks)
    x0, y0 = outer.min(axis=0)
    x1, y1 = outer.max(axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + MOUTH_CROP_MARGIN)
    return SquareBox((x0 + x1) / 2, (y0 + y1) / 2, side)


@functools.cache
def eye_indices() -> tuple[list[int], list[int]]:
    """MediaPipe's eye rings (image-left eye first: the person's right eye)."""
    mesh = mesh_connections()
    return (sorted({i for e in mesh.FACEMESH_RIGHT_EYE for i in e}),
            sorted({i for e in mesh.FACEMESH_LEFT_EYE for i in e}))


def _eye_corners(landmarks: Landmarks) -> np.ndarray:
    """(2, 2, 2): for each eye, its two corners (the ring's farthest pair), image-left first."""
    if len(landmarks) == 68:
        rings = [landmarks[36:42], landmarks[42:48]]  # iBUG layout
    else:
        rings = [landmarks[idx] for idx in eye_indices()]
    corners = []
    for ring in rings:
        ring = ring[:, :2]
        d = ((ring[:, None] - ring[None]) ** 2).sum(-1)
        i, j = np.unravel_index(np.argmax(d), d.shape)
        corners.append(np.stack([ring[i], ring[j]]))
    out = np.stack(corners)
    return out if out[0].mean(0)[0] <= out[1].mean(0)[0] else out[::-1]


def eye_frame(landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(anchor, u, v, iod): the eyes' midpoint, the unit axis from the image-left eye to the
    other, its perpendicular pointing down the face, and the inter-ocular distance (px).
    Eye corners do not move when the mouth opens or the eyes blink."""
    corners = _eye_corners(landmarks).astype(np.float64)
    left, right = corners[0].mean(0), corners[1].mean(0)
    iod = float(np.linalg.norm(right - left))
    u = (right - left) / max(iod, 1e-6)
    return (left + right) / 2, u, np.array([-u[1], u[0]]), iod


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


def _relative(box: SquareBox, landmarks: Landmarks) -> np.ndarray:
    anchor, u, v, iod = eye_frame(landmarks)
    d = np.array([box.cx, box.cy]) - anchor
    return np.array([d @ u / iod, d @ v / iod, box.side / iod])


def calibrate_boxes(landmarks: np.ndarray, valid: np.ndarray) -> BoxCalibration:
    """Median eye-relative placement of the face and lip boxes over the valid frames."""
    idx = np.flatnonzero(valid)
    face = np.median([_relative(_face_box(landmarks[i]), landmarks[i]) for i in idx], axis=0)
    mouth = np.median([_relative(mouth_box(landmarks[i]), landmarks[i]) for i in idx], axis=0)
    return BoxCalibration(tuple(map(float, face)), tuple(map(float, mouth)))  # type: ignore[arg-type]


def placed_box(landmarks: Landmarks, rel: tuple[float, float, float]) -> SquareBox:
    """A calibrated box placed on this frame's eyes."""
    anchor, u, v, iod = eye_frame(landmarks)
    centre = anchor + rel[0] * iod * u + rel[1] * iod * v
    return SquareBox(float(centre[0]), float(centre[1]), rel[2] * iod)


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
    """Similarity (rotation, uniform scale, shift) putting this frame's own mouth corners at
    the canonical mouth frame's fixed points."""
    return outer_ring_affine(outer_inner_rings(landmarks)[0], patch_hw)


def outer_ring_affine(outer: np.ndarray, patch_hw: tuple[int, int]) -> Affine:
    """:func:`hd_affine` of an outer lip ring (K, 2) alone."""
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


def mouth_corners(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) mouth corners of an outer lip ring (K, 2): its extremes along the
    corner-to-corner axis, image-left first."""
    centre, u, _ = mouth_axes(points)
    proj = (points - centre) @ u
    return centre + proj.min() * u, centre + proj.max() * u


def corner_affine(left: np.ndarray, right: np.ndarray, patch_hw: tuple[int, int]) -> Affine:
    """The similarity (rotation, uniform scale, shift) frame -> canonical mouth frame that
    puts the corners ``left``, ``right`` at their fixed points (25 % and 75 % of the width,
    half the height)."""
    h, w = patch_hw
    d = right - left
    width = max(float(np.hypot(*d)), 1e-6)
    s = HD_CORNER_SPAN * w / width
    c, n = d / width  # cos, sin of the corner line's angle
    mid = (left + right) / 2
    rot = s * np.array([[c, n], [-n, c]])
    return np.hstack([rot, (np.array([w / 2, h / 2]) - rot @ mid)[:, None]])


MEDIAPIPE_NOSE = (1, 2, 98, 327)  # nose tip, under the nose, the two wings
IBUG_NOSE = (30, 33, 31, 35)


def rigid_points(landmarks: Landmarks) -> np.ndarray:
    """Points that move with the skull, not the jaw: the eye corners and the nose (tip,
    base, wings): (8, 2)."""
    nose = IBUG_NOSE if len(landmarks) == 68 else MEDIAPIPE_NOSE
    return np.concatenate([_eye_corners(landmarks).reshape(-1, 2),
                           landmarks[list(nose)][:, :2]]).astype(np.float64)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> Affine:
    """The least-squares similarity (rotation, uniform scale, shift) taking points ``src``
    (K, 2) to ``dst`` (Umeyama 1991), as a 2x3 matrix."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d)) / max(float((a ** 2).sum() / len(src)), 1e-12)
    m = scale * rot
    return np.hstack([m, (md - m @ ms)[:, None]])


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
        idx = np.flatnonzero(valid)
        first = rigid_points(landmarks[idx[0]])
        reference = first - first.mean(0)
        rigid, corners = [], []
        for i in idx:
            m = similarity_fit(rigid_points(landmarks[i]), reference)  # frame -> reference
            rigid.append(transform_points(rigid_points(landmarks[i]), m))
            corners.append(transform_points(
                np.stack(mouth_corners(outer_inner_rings(landmarks[i])[0])), m))
        return cls(np.median(rigid, axis=0), np.median(corners, axis=0))

    def place(self, landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated corners placed on this frame's skull: (left, right)."""
        m = similarity_fit(self.rigid, rigid_points(landmarks))
        left, right = transform_points(self.corners, m).astype(np.float64)
        return left, right


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
