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
from tqdm import tqdm

from hygie_w2l.cache import Detections, TemplateCache
from hygie_w2l.errors import InputFileError
from hygie_w2l.face_tracker import FaceTracker, Track, TrackerConfig, tracks_from_points
from hygie_w2l.media import MediaInfo, probe, read_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LoopMode = Literal["pingpong", "wrap"]
NO_TRACK = Track(np.zeros((0, 0, 2), np.float32), np.zeros(0, np.uint8), np.zeros((0, 3)),
                 np.zeros((0, 3)), np.zeros((0, 3), np.float32), 0, 0.0)  # until tracked


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
    track: Track  # set once tracked (or read from the cache)
    fps: float
    tmpdir: tempfile.TemporaryDirectory | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # decode, track
    cache_note: str = ""  # whether its tracking came from the cache

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def close(self) -> None:
        if isinstance(self.frames, RawFrames):
            self.frames.close()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


def load_template(path: str | Path, fps: float, start_s: float = 0.0,
                  config: TrackerConfig = TrackerConfig(), max_frames: int | None = None,
                  use_cache: bool = True) -> Template:
    """Decode (to a temporary raw file) and track a template video or image; with
    ``max_frames``, only as many frames as will be shown. A video's face detections are
    kept in the cache (cache.TemplateCache) and read back by later renders."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _load_image(path, fps, config)
    info = probe(path)
    if not info.has_video:
        raise InputFileError(path, "has no video stream", "Give a video or an image of the face.")
    if info.truncated:
        tqdm.write(f"warning: {path} is truncated (it ends before its own index says): only "
                   f"{info.n_frames} of ~{round(info.duration_s * info.fps)} frames can be read "
                   "and the template loops on those. Re-export or re-download it whole.")
    n_max = int(np.ceil((info.duration_s - start_s) * fps)) + 2
    if max_frames is not None:
        n_max = min(n_max, max_frames)
    cache = TemplateCache(path, {"fps": fps, "start_s": start_s,
                                 "tracker": dataclasses.asdict(config)}) if use_cache else None
    cached = cache.load(n_max) if cache is not None else None
    template, detections = _decode(path, info, fps, start_s, n_max,
                                   None if cached is not None else FaceTracker(config))
    if cached is not None and cache is not None:
        detections = dataclasses.replace(cached, points=cached.points[:template.n_frames],
                                         status=cached.status[:template.n_frames])
        template.cache_note = f"template tracking read from the cache ({cache.file.name})"
    elif cache is not None and detections is not None:
        template.cache_note = f"template tracked ({cache.why_not()}) and cached"
        cache.save(detections)
    assert detections is not None
    template.track = tracks_from_points(list(detections.points), list(detections.status), fps,
                                        config, detections.multi_face_frames)
    return template


def _load_image(path: Path, fps: float, config: TrackerConfig) -> Template:
    image: np.ndarray | None = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputFileError(path, "cannot be read as an image",
                             "Give a PNG or JPEG photo, or a video.")
    still = FaceTracker(dataclasses.replace(config))
    face_points, face_status = still.step(image)
    still.close()
    return Template(image[None], tracks_from_points([face_points], [face_status], fps, config,
                                                    still.multi_face_frames), fps)


def _decode(path: Path, info: MediaInfo, fps: float, start_s: float, n_max: int,
            tracker: FaceTracker | None) -> tuple[Template, Detections | None]:
    """Up to ``n_max`` frames from ``start_s`` into a raw file (the Template, its track
    still to be made) and, with a tracker, their face detections."""
    tmpdir = tempfile.TemporaryDirectory(prefix="hygie-template-")
    raw = Path(tmpdir.name) / "frames.u8"
    points: list[np.ndarray] = []
    statuses: list[int] = []
    seconds = {"decode": 0.0, "track": 0.0}
    n, since, complete = 0, time.perf_counter(), True
    with raw.open("wb") as store:
        for frame in read_frames(path, fps=fps, start_s=start_s, info=info):
            if n == n_max:
                complete = False
                break
            store.write(frame.tobytes())
            now = time.perf_counter()
            seconds["decode"] += now - since
            if tracker is not None:
                p, status = tracker.step(frame)
                points.append(p if p is not None else np.full((tracker.n_points, 3), np.nan,
                                                              np.float32))
                statuses.append(status)
            n += 1
            since = time.perf_counter()
            seconds["track"] += since - now
    if tracker is not None:
        tracker.close()
    if n == 0:
        tmpdir.cleanup()
        raise InputFileError(path, f"no frame after --start {start_s:g} s",
                             "Use a smaller --start.")
    detections = None if tracker is None else Detections(
        np.stack(points).astype(np.float32), np.array(statuses, np.uint8),
        tracker.multi_face_frames, complete)
    template = Template(RawFrames(raw, n, (info.height, info.width, 3)), NO_TRACK, fps,
                        tmpdir, seconds)
    return template, detections
