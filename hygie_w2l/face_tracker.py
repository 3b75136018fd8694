"""Face tracking over a video: landmarks per frame, a smoothed face box, confidence, and an
honest account of the frames where no face was found.

Backends return every face's landmarks; the tracker keeps the largest face, re-detects with
a full (static) detection when video-mode tracking loses the face, interpolates short gaps
from their neighbours and reports long ones as time ranges. MediaPipe FaceMesh (478 points,
refined lips; its models ship inside the wheel, offline) is the default backend;
face-alignment (S3FD + FAN, 68 points) is used when installed and its weights are present.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from tqdm import tqdm

from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import BoxCalibration, calibrate_boxes, eye_indices, placed_boxes
from hygie_w2l.types import Image, Landmarks, TrackerBackend

# MediaPipe logs through absl/glog to stderr; keep the terminal for our own progress bars.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STATUS_TRACKED, STATUS_REDETECTED, STATUS_INTERPOLATED, STATUS_MISSING = 0, 1, 2, 3
S3FD_FILE = "s3fd-619a316812.pth"
STATUS_NAMES = ("tracked", "redetected", "interpolated", "missing")
CONFIDENCE = {STATUS_TRACKED: 1.0, STATUS_REDETECTED: 0.9, STATUS_INTERPOLATED: 0.5,
              STATUS_MISSING: 0.0}


class NoFaceError(HygieError):
    pass


class LandmarkBackend(Protocol):
    """Finds faces in one frame: a list of (N, 3) float32 arrays (x, y pixels, relative z)."""

    n_points: int

    def detect(self, frame: Image) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class MediaPipeBackend:
    """MediaPipe FaceMesh with refined lips and irises (478 points)."""

    n_points = 478

    def __init__(self, video: bool = True, max_faces: int = 2, min_confidence: float = 0.5):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)

    def detect(self, frame: Image) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        result = self._mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return [np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float32)
                for face in (result.multi_face_landmarks or [])]

    def close(self) -> None:
        self._mesh.close()


class FaceAlignmentBackend:
    """face-alignment's S3FD detector + FAN landmarks (68 points, iBUG layout)."""

    n_points = 68

    def __init__(self, weights: Path | None = None, device: str = "cpu") -> None:
        from hygie_w2l.weights import official_path

        weights = weights or official_path(S3FD_FILE)
        try:
            import face_alignment
        except ImportError as exc:
            raise HygieError("the face-alignment backend needs `pip install "
                             "'hygie-w2l[face-alignment]'`; use --backend mediapipe") from exc
        if not weights.exists():
            raise HygieError(f"{weights}: S3FD weights not found. Run `hygie-w2l weights "
                             "download s3fd-619a316812.pth` or use --backend mediapipe.")
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(weights)})

    def detect(self, frame: Image) -> list[np.ndarray]:
        faces = self._fa.get_landmarks_from_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return [np.c_[f[:, :2], np.zeros(len(f))].astype(np.float32) for f in faces or []]

    def close(self) -> None:
        pass


def make_backend(name: TrackerBackend, video: bool = True, max_faces: int = 2
                 ) -> LandmarkBackend:
    if name == "face-alignment":
        return FaceAlignmentBackend()
    return MediaPipeBackend(video=video, max_faces=max_faces)


class FaceMeshDetector:
    """The largest face of single frames (2-D landmarks), for measurements and tests."""

    def __init__(self, video: bool = True, max_faces: int = 2) -> None:
        self._backend = MediaPipeBackend(video=video, max_faces=max_faces)
        self.n_faces_last = 0

    def detect(self, frame: Image) -> Landmarks | None:
        """frame: (H, W, 3) uint8 BGR. Returns (478, 2) float32 pixel coordinates or None."""
        faces = self._backend.detect(frame)
        self.n_faces_last = len(faces)
        return largest(faces)[:, :2] if faces else None

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> FaceMeshDetector:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def face_area(face: np.ndarray) -> float:
    """The area of a face's landmark bounding box, in square pixels."""
    return float(np.ptp(face[:, 0]) * np.ptp(face[:, 1]))


def largest(faces: list[np.ndarray]) -> np.ndarray:
    return max(faces, key=face_area)


# ------------------------------------------------------------------------ smoothing ----

class OneEuro:
    """One-Euro filter (Casiez et al. 2012) on a vector: strong smoothing when still, little
    lag on fast moves (the cut-off rises with the speed)."""

    def __init__(self, fps: float, min_cutoff_hz: float = 0.6, beta: float = 0.03,
                 d_cutoff_hz: float = 1.0) -> None:
        self.dt = 1.0 / fps
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff_hz, beta, d_cutoff_hz
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.dt)

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self.x is None:
            self.x, self.dx = value, np.zeros_like(value)
            return value
        assert self.dx is not None
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * (value - self.x) / self.dt + (1 - a_d) * self.dx
        # the box size sets the scale of "fast": normalise speed by it (last component)
        scale = max(float(value[-1]), 1.0) / 100.0
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx) / scale
        a = self._alpha(cutoff)
        self.x = a * value + (1 - a) * self.x
        return self.x


# --------------------------------------------------------------------------- tracks ----

@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    backend: TrackerBackend = "mediapipe"
    max_side_px: int = 1280  # larger frames are downscaled for detection (4K stays fast)
    max_gap_frames: int = 12  # gaps up to 0.48 s at 25 fps are interpolated
    min_cutoff_hz: float = 0.6
    beta: float = 0.03
    face_index: int = 0  # with several faces: follow the largest (0), the next (1) ...


@dataclasses.dataclass
class Track:
    """Per-frame results for a whole video (N frames)."""

    landmarks: np.ndarray  # (N, P, 2) float32 pixels; NaN where missing
    status: np.ndarray  # (N,) uint8: STATUS_*
    raw_boxes: np.ndarray  # (N, 3) float64 face box (cx, cy, side) placed on each frame's eyes
    boxes: np.ndarray  # (N, 3) float64 One-Euro smoothed face box
    pose_deg: np.ndarray  # (N, 3) float32 yaw, pitch, roll (approximate); NaN where missing
    multi_face_frames: int
    fps: float
    calibration: BoxCalibration | None = None  # None when no frame has a face
    face_index: int = 0  # which face was followed (TrackerConfig.face_index)

    @property
    def confidence(self) -> np.ndarray:
        return np.array([CONFIDENCE[int(s)] for s in self.status], np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The track as named arrays (kept in the template cache: cache.TemplateCache)."""
        calibration = (np.full((2, 3), np.nan) if self.calibration is None
                       else np.array([self.calibration.face, self.calibration.mouth]))
        return {"landmarks": self.landmarks, "status": self.status,
                "raw_boxes": self.raw_boxes, "boxes": self.boxes, "pose_deg": self.pose_deg,
                "calibration": calibration,
                "counts": np.array([self.multi_face_frames, self.face_index]),
                "fps": np.array(float(self.fps))}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Track:
        """:meth:`to_arrays` read back (KeyError, ValueError: not a track's)."""
        face, mouth = (tuple(float(v) for v in row) for row in a["calibration"])
        calibration = None if np.isnan(a["calibration"]).any() else BoxCalibration(
            face, mouth)  # type: ignore[arg-type]
        multi, face_index = (int(v) for v in a["counts"])
        n = len(a["status"])
        if not (len(a["landmarks"]) == len(a["boxes"]) == len(a["pose_deg"]) == n):
            raise ValueError("a track's arrays disagree on its length")
        return cls(a["landmarks"], a["status"], a["raw_boxes"], a["boxes"], a["pose_deg"],
                   multi, float(a["fps"]), calibration, face_index)

    @property
    def valid(self) -> np.ndarray:
        return self.status != STATUS_MISSING

    def missing_ranges(self) -> list[tuple[int, int]]:
        """[start, end) frame ranges still without a face after interpolation."""
        return runs(self.status == STATUS_MISSING)

    def report(self) -> str:
        n = len(self.status)
        counts = {name: int((self.status == i).sum()) for i, name in enumerate(STATUS_NAMES)}
        lines = [f"face found in {n - counts['missing']}/{n} frames "
                 f"({counts['redetected']} re-detected, {counts['interpolated']} interpolated)"]
        ranges = self.missing_ranges()
        if ranges:
            spans = ", ".join(f"{a / self.fps:.2f}-{b / self.fps:.2f} s" for a, b in ranges)
            lines.append(f"no face in {counts['missing']} frames: {spans}")
        if self.multi_face_frames:
            which = "the largest" if self.face_index == 0 else \
                f"number {self.face_index + 1} by size"
            lines.append(f"several faces in {self.multi_face_frames} frames: following one "
                         f"face throughout ({which} when first seen; --face-index N follows "
                         "another)")
        return "\n".join(lines)


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) ranges where ``flags`` is True."""
    padded = np.r_[False, flags.astype(bool), False]
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def head_poses_deg(points3d: np.ndarray) -> np.ndarray:
    """Approximate (yaw, pitch, roll) in degrees of N frames' 3-D landmarks (N, P, 3):
    (N, 3) float32. The face plane's normal (least-variance axis of the points) gives yaw
    and pitch, the eye line gives roll."""
    centred = points3d - points3d.mean(axis=1, keepdims=True)
    normal = np.linalg.svd(centred, full_matrices=False)[2][:, -1]  # (N, 3)
    normal = np.where(normal[:, 2:] > 0, -normal, normal)
    yaw = np.degrees(np.arctan2(normal[:, 0], -normal[:, 2]))
    pitch = np.degrees(np.arctan2(normal[:, 1], -normal[:, 2]))
    eyes = _eye_centres(points3d)
    roll = np.degrees(np.arctan2(eyes[:, 1, 1] - eyes[:, 0, 1], eyes[:, 1, 0] - eyes[:, 0, 0]))
    return np.stack([yaw, pitch, roll], 1).astype(np.float32)


def _eye_centres(points: np.ndarray) -> np.ndarray:
    """(N, 2, 2): the mean of each eye ring's points (image-left eye first)."""
    if points.shape[1] == 68:
        left, right = points[:, 36:42], points[:, 42:48]  # iBUG 68-point layout
    else:
        left_idx, right_idx = eye_indices()
        left, right = points[:, left_idx], points[:, right_idx]
    return np.stack([left[..., :2].mean(1), right[..., :2].mean(1)], 1)


def _downscale(frame: Image, max_side_px: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    scale = min(1.0, max_side_px / max(h, w))
    if scale == 1.0:
        return frame, 1.0
    return cv2.resize(frame, (round(w * scale), round(h * scale)),
                      interpolation=cv2.INTER_AREA), scale


class FaceTracker:
    """Streaming tracker: feed frames in order, get (landmarks (P, 3) or None, status)."""

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._faces = max(2, config.face_index + 2)  # one more than followed: to notice others
        self._tracker = make_backend(config.backend, video=True, max_faces=self._faces)
        self.n_points = self._tracker.n_points
        self._redetector: LandmarkBackend | None = None
        self.multi_face_frames = 0
        self._centre: np.ndarray | None = None  # of the face followed, when last seen

    def step(self, frame: Image) -> tuple[np.ndarray | None, int]:
        small, scale = _downscale(frame, self.config.max_side_px)
        faces = self._tracker.detect(small)
        status = STATUS_TRACKED
        if not faces:  # tracking lost: a full detection on this frame before giving up
            if self._redetector is None:
                self._redetector = make_backend(self.config.backend, video=False,
                                                max_faces=self._faces)
            faces = self._redetector.detect(small)
            status = STATUS_REDETECTED
        self.multi_face_frames += len(faces) > 1
        points = self._follow(faces)
        if points is None:
            return None, STATUS_MISSING
        points[:, :3] /= scale
        return points, status

    def _follow(self, faces: list[np.ndarray]) -> np.ndarray | None:
        """One person throughout: at first the ``face_index``-th largest face, then the
        face nearest to where that one was last seen (never a jump to another person)."""
        if not faces:
            return None
        if self._centre is None:
            if len(faces) <= self.config.face_index:
                return None  # not there yet
            chosen = sorted(faces, key=face_area, reverse=True)[self.config.face_index]
        else:
            centre = self._centre
            chosen = min(faces, key=lambda f: float(np.linalg.norm(f[:, :2].mean(0) - centre)))
        self._centre = chosen[:, :2].mean(0)
        return chosen

    def close(self) -> None:
        self._tracker.close()
        if self._redetector is not None:
            self._redetector.close()


def fill_gaps(points: np.ndarray, status: np.ndarray, max_gap: int) -> None:
    """Interpolate (in place) runs of missing frames no longer than ``max_gap``; a run at
    either end of the video holds the nearest face."""
    n = len(status)
    for a, b in runs(status == STATUS_MISSING):
        if b - a > max_gap or (a == 0 and b == n):
            continue
        if a == 0:
            points[a:b] = points[b]
        elif b == n:
            points[a:b] = points[a - 1]
        else:
            w = ((np.arange(a, b) - (a - 1)) / (b - (a - 1)))[:, None, None]
            points[a:b] = (1 - w) * points[a - 1] + w * points[b]
        status[a:b] = STATUS_INTERPOLATED


def smooth_boxes(raw: np.ndarray, fps: float, config: TrackerConfig) -> np.ndarray:
    """One-Euro smoothing of (N, 3) boxes; NaN rows (no face) restart the filter."""
    out = np.full_like(raw, np.nan)
    filt = OneEuro(fps, config.min_cutoff_hz, config.beta)
    for i, box in enumerate(raw):
        if np.isnan(box).any():
            filt = OneEuro(fps, config.min_cutoff_hz, config.beta)
            continue
        out[i] = filt(box)
    return out


def track_frames(frames: Iterable[Image], fps: float, config: TrackerConfig = TrackerConfig(),
                 n_frames: int | None = None, progress: bool = True) -> Track:
    """Track the face through a stream of frames (constant memory per frame kept: landmarks)."""
    tracker = FaceTracker(config)
    points, statuses = [], []
    try:
        for frame in tqdm(frames, total=n_frames, desc="tracking", unit="frame",
                          disable=not progress or None, leave=False):
            p, s = tracker.step(frame)
            points.append(p)
            statuses.append(s)
    finally:
        tracker.close()
    return tracks_from_points(points, statuses, fps, config, tracker.multi_face_frames)


def tracks_from_points(points: list[np.ndarray | None], statuses: list[int], fps: float,
                       config: TrackerConfig, multi_face_frames: int) -> Track:
    """Per-frame detections -> a Track: gaps filled, boxes calibrated and smoothed, pose."""
    if not statuses:
        raise NoFaceError("the video has no frames")
    n_points = next((p.shape[0] for p in points if p is not None), 478)
    arr = np.stack([p if p is not None else np.full((n_points, 3), np.nan, np.float32)
                    for p in points])
    status = np.array(statuses, np.uint8)
    fill_gaps(arr, status, config.max_gap_frames)
    valid = status != STATUS_MISSING
    landmarks = arr[:, :, :2].astype(np.float32)
    raw = np.full((len(arr), 3), np.nan)
    pose = np.full((len(arr), 3), np.nan, np.float32)
    calibration = calibrate_boxes(landmarks, valid) if valid.any() else None
    idx = np.flatnonzero(valid)
    if calibration is not None:
        raw[idx] = placed_boxes(landmarks[idx], calibration.face)
        pose[idx] = head_poses_deg(arr[idx])
    return Track(landmarks, status, raw, smooth_boxes(raw, fps, config), pose,
                 multi_face_frames, fps, calibration, config.face_index)
