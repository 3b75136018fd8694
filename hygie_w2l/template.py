"""The living template: a video (or a still image) whose frames carry blinks, breathing and
head motion, played for as long as the new audio lasts.

The video is decoded once, at the output frame rate and only as far as it will be shown,
into a raw uint8 file in a temporary folder (disk, not memory) and tracked on the way;
frames are then read back by index, so a template shorter than the audio plays forwards
then backwards (ping-pong: no jump cut) or loops (wrap), and memory stays bounded whatever
the lengths.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from hygie_w2l.errors import InputFileError
from hygie_w2l.face_tracker import FaceTracker, Track, TrackerConfig, tracks_from_points
from hygie_w2l.media import probe, read_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LoopMode = Literal["pingpong", "wrap"]


def template_index(k: int, n: int, loop: LoopMode) -> int:
    """Template frame shown at output frame ``k`` for a template of ``n`` frames."""
    if n == 1:
        return 0
    if loop == "wrap":
        return k % n
    period = 2 * (n - 1)  # 0 1 .. n-1 n-2 .. 1 0 1 ..: no frame shown twice in a row
    r = k % period
    return r if r < n else period - r


class RawFrames:
    """Frames in a raw file, read back one by one with pread: only the frame in hand is in
    memory (a memmap would count every page it touched as resident)."""

    def __init__(self, path: Path, n: int, shape: tuple[int, int, int]) -> None:
        self.path, self.shape = path, (n, *shape)
        self._size = int(np.prod(shape))
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        buf = os.pread(self._fd, self._size, t * self._size)
        return np.frombuffer(buf, np.uint8).reshape(self.shape[1:])

    def close(self) -> None:
        os.close(self._fd)


@dataclasses.dataclass
class Template:
    frames: RawFrames | np.ndarray  # (n, H, W, 3) uint8 BGR
    track: Track
    fps: float
    tmpdir: tempfile.TemporaryDirectory | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # decode, track

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def close(self) -> None:
        if isinstance(self.frames, RawFrames):
            self.frames.close()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


def load_template(path: str | Path, fps: float, start_s: float = 0.0,
                  config: TrackerConfig = TrackerConfig(), max_frames: int | None = None
                  ) -> Template:
    """Decode (to a temporary raw file) and track a template video or image; with
    ``max_frames``, only as many frames as will be shown."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image: np.ndarray | None = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputFileError(path, "cannot be read as an image",
                                 "Give a PNG or JPEG photo, or a video.")
        frames = image[None]
        still = FaceTracker(dataclasses.replace(config))
        face_points, face_status = still.step(image)
        still.close()
        return Template(frames, tracks_from_points([face_points], [face_status], fps, config,
                                                   still.multi_face_frames), fps)
    info = probe(path)
    if not info.has_video:
        raise InputFileError(path, "has no video stream", "Give a video or an image of the face.")
    tmpdir = tempfile.TemporaryDirectory(prefix="hygie-template-")
    raw = Path(tmpdir.name) / "frames.u8"
    n_max = int(np.ceil((info.duration_s - start_s) * fps)) + 2
    if max_frames is not None:
        n_max = min(n_max, max_frames)
    store = raw.open("wb")
    tracker = FaceTracker(config)
    points: list[np.ndarray | None] = []
    statuses: list[int] = []
    n = 0
    seconds = {"decode": 0.0, "track": 0.0}
    since = time.perf_counter()
    for frame in read_frames(path, fps=fps, start_s=start_s, info=info):
        if n == n_max:
            break
        store.write(frame.tobytes())
        now = time.perf_counter()
        seconds["decode"] += now - since
        p, s = tracker.step(frame)
        points.append(p)
        statuses.append(s)
        n += 1
        since = time.perf_counter()
        seconds["track"] += since - now
    tracker.close()
    store.close()
    if n == 0:
        tmpdir.cleanup()
        raise InputFileError(path, f"no frame after --start {start_s:g} s",
                             "Use a smaller --start.")
    track = tracks_from_points(points, statuses, fps, config, tracker.multi_face_frames)
    return Template(RawFrames(raw, n, (info.height, info.width, 3)), track, fps, tmpdir,
                    seconds)
