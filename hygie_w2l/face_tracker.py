"""Face landmarks per frame with MediaPipe FaceMesh (478 points with refined lips and irises).

MediaPipe 0.10.21 ships its face models inside the wheel, so this works offline.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import cv2
import numpy as np

from hygie_w2l.types import Frame, Landmarks

# MediaPipe logs through absl/glog to stderr; keep the terminal for our own progress bars.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class FaceMeshDetector:
    """Landmarks of the largest face in each frame, or None when no face is found.

    ``video=True`` uses MediaPipe's tracking mode (landmarks of frame t seed frame t+1),
    which is faster and steadier on a video; ``video=False`` treats frames independently.
    """

    def __init__(self, video: bool = True, max_faces: int = 2, min_confidence: float = 0.5):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        self.n_faces_last = 0

    def detect(self, frame: Frame) -> Landmarks | None:
        """frame: (H, W, 3) uint8 BGR. Returns (478, 2) float32 pixel coordinates or None."""
        h, w = frame.shape[:2]
        result = self._mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        faces = result.multi_face_landmarks or []
        self.n_faces_last = len(faces)
        if not faces:
            return None
        sets = [np.array([(p.x * w, p.y * h) for p in f.landmark], np.float32) for f in faces]
        return max(sets, key=lambda lm: float(np.ptp(lm[:, 0]) * np.ptp(lm[:, 1])))

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMeshDetector:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def detect_all(frames: Iterator[Frame], video: bool = True) -> list[Landmarks | None]:
    """Landmarks of every frame of a stream (None where no face is found)."""
    with contextlib.closing(FaceMeshDetector(video=video)) as detector:
        return [detector.detect(frame) for frame in frames]
