"""The living template: a video (or a still image) whose frames carry blinks, breathing and
head motion, played for as long as the new audio lasts.

The video is decoded once, at the output frame rate and only as far as it will be shown,
into a raw uint8 file in a temporary folder (disk, not memory) and tracked on the way;
frames are then read back by index, so a template shorter than the audio plays forwards
then backwards (ping-pong: no jump cut) or loops (wrap), and memory stays bounded whatever
the lengths. When its tracking is in the cache (cache.py), nothing needs every frame before
the render starts: the file is decoded by a thread of its own while the render runs, and
reading a frame waits until it is there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm import tqdm

from hygie_w2l.cache import Detections, TemplateCache, digest
from hygie_w2l.errors import InputFileError
from hygie_w2l.face_tracker import FaceTracker, Track, TrackerConfig, tracks_from_points
from hygie_w2l.media import MediaInfo, probe, read_frames
from hygie_w2l.pixels import PixelFormat, frame_shape, picture_hw, supports

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

    def __init__(self, path: Path, n: int, shape: tuple[int, ...]) -> None:
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


LIVE_AHEAD_BYTES = 24 << 20  # what a live decoder may hold ahead of the reader (>= 1 frame)


class LiveFrames:
    """The frames of a template being decoded by a thread (_fill) while the render runs;
    reading a frame waits until it is decoded. Frames that will be shown again (the audio
    outlasts the template: ping-pong or wrap) also go to a raw file and are read back from
    it; otherwise each is handed over in memory once, the decoder staying at most
    LIVE_AHEAD_BYTES ahead (no file written: a render reads its frames in order)."""

    def __init__(self, path: Path, n: int, shape: tuple[int, ...], revisit: bool) -> None:
        self.path, self.shape, self.revisit = path, (n, *shape), revisit
        self.written = 0
        self.error: BaseException | None = None  # what stopped the decoder
        self._ahead: dict[int, np.ndarray] = {}
        self._filling = True
        self._changed = threading.Condition()
        self._file = RawFrames(path, n, shape) if revisit else None
        self._ahead_max = max(1, LIVE_AHEAD_BYTES // int(np.prod(shape)))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        with self._changed:
            while not (t in self._ahead or t < self.written and self._file is not None
                       or not self._filling):
                for skipped in [k for k in self._ahead if k < t]:  # read in order: unneeded
                    del self._ahead[skipped]
                self._changed.notify_all()
                self._changed.wait()
            frame = self._ahead.pop(t, None)
            self._changed.notify_all()
        if frame is not None:
            return frame
        if self._file is not None and t < self.written:
            return self._file[t]
        if self.error is not None:
            raise self.error
        raise InputFileError(self.path, f"frame {t} cannot be read: its file holds "
                             f"{self.written} frames where its cached tracking has {len(self)}"
                             " (did it change during the render?)", "Render again.")

    def put(self, t: int, frame: np.ndarray, stop: threading.Event) -> None:
        """The decoder's side: frame ``t`` is decoded (and, to be revisited, written)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._ahead) < self._ahead_max
                                   or stop.is_set(), timeout=None)
            if not self.revisit:
                self._ahead[t] = frame
            self.written = t + 1
            self._changed.notify_all()

    def filled(self, error: BaseException | None = None) -> None:
        with self._changed:
            self._filling, self.error = False, error
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclasses.dataclass
class Template:
    frames: RawFrames | LiveFrames | np.ndarray  # (n, H, W, 3) BGR or (n, H * 3/2, W) I420
    track: Track  # set once tracked (or read from the cache)
    fps: float
    pix_fmt: PixelFormat = "bgr24"  # how its frames are held (pixels.py)
    tmpdir: tempfile.TemporaryDirectory | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # decode, track
    cache_note: str = ""  # whether its tracking came from the cache
    decoder: tuple[threading.Thread, threading.Event] | None = None  # _decode_behind's
    cache: TemplateCache | None = None  # where its tracking (and derived features) are kept

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def hw(self) -> tuple[int, int]:
        """The pictures' height and width."""
        return picture_hw(self.frames.shape[1:])

    def close(self) -> None:
        if self.decoder is not None:
            thread, stop = self.decoder
            stop.set()
            if isinstance(self.frames, LiveFrames):
                self.frames.wake()
            thread.join()
        if isinstance(self.frames, RawFrames | LiveFrames):
            self.frames.close()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


def template_info(path: str | Path) -> MediaInfo | None:
    """What :func:`load_template` learns of a video first (its frames counted; None for an
    image), for a caller that probes it while doing something else."""
    return None if Path(path).suffix.lower() in IMAGE_SUFFIXES else probe(path)


def load_template(path: str | Path, fps: float, start_s: float = 0.0,
                  config: TrackerConfig = TrackerConfig(), max_frames: int | None = None,
                  use_cache: bool = True, pix_fmt: PixelFormat = "bgr24",
                  info: MediaInfo | None = None) -> Template:
    """Decode (to a temporary raw file) and track a template video or image; with
    ``max_frames``, only as many frames as will be shown. A video's face detections are
    kept in the cache (cache.TemplateCache) and read back by later renders. ``pix_fmt``:
    how the frames are wanted; a still image, or odd sizes, give BGR (Template.pix_fmt).
    ``info``: :func:`template_info`'s, when already known."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _load_image(path, fps, config)
    info = info or probe(path)
    if not info.has_video:
        raise InputFileError(path, "has no video stream", "Give a video or an image of the face.")
    if not supports(pix_fmt, info.height, info.width):
        pix_fmt = "bgr24"
    if info.truncated:
        tqdm.write(f"warning: {path} is truncated (it ends before its own index says): only "
                   f"{info.n_frames} of ~{round(info.duration_s * info.fps)} frames can be read "
                   "and the template loops on those. Re-export or re-download it whole.")
    n_max = int(np.ceil((info.duration_s - start_s) * fps)) + 2
    if max_frames is not None:
        n_max = min(n_max, max_frames)
    cache = TemplateCache(path, {"fps": fps, "start_s": start_s,
                                 "tracker": dataclasses.asdict(config)}) if use_cache else None
    detections = cache.load(n_max) if cache is not None else None
    if detections is not None and cache is not None:
        shown_again = max_frames is None or max_frames > len(detections)
        template = _decode_behind(path, info, fps, start_s, len(detections), shown_again,
                                  pix_fmt)
        template.cache_note = f"template tracking read from the cache ({cache.file.name})"
    else:
        template, detections = _decode(path, info, fps, start_s, n_max, FaceTracker(config),
                                       pix_fmt)
        if cache is not None:
            template.cache_note = f"template tracked ({cache.why_not()}) and cached"
            cache.save(detections)
    template.track = _track(detections, fps, config, cache)
    template.cache = cache
    return template


TRACK_CACHE_VERSION = 1  # bump when tracks_from_points changes what it computes


def _track(detections: Detections, fps: float, config: TrackerConfig,
           cache: TemplateCache | None) -> Track:
    """The track of ``detections`` (gaps filled, boxes smoothed, head pose: they depend on
    how many frames are shown), read back from the cache when the last render made it of as
    many frames (30-50 ms of a warm render's set-up at 200 frames), kept there otherwise (one
    track per template: the last one made; a template shorter than the speech is shown whole
    every time)."""
    name = f"track{TRACK_CACHE_VERSION}"
    source = digest(detections.points, detections.status, str(detections.multi_face_frames),
                    name)
    kept = cache.derived(name, source) if cache is not None else None
    if kept is not None:
        with contextlib.suppress(KeyError, ValueError, TypeError, IndexError):
            return Track.from_arrays(kept)
    track = tracks_from_points(list(detections.points), list(detections.status), fps, config,
                               detections.multi_face_frames)
    if cache is not None:
        cache.save_derived(name, source, track.to_arrays())
    return track


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
            tracker: FaceTracker, pix_fmt: PixelFormat) -> tuple[Template, Detections]:
    """Up to ``n_max`` frames from ``start_s`` into a raw file (the Template, its track
    still to be made) and their face detections."""
    tmpdir = tempfile.TemporaryDirectory(prefix="hygie-template-")
    raw = Path(tmpdir.name) / "frames.u8"
    points: list[np.ndarray] = []
    statuses: list[int] = []
    seconds = {"decode": 0.0, "track": 0.0}
    n, since, complete = 0, time.perf_counter(), True
    # one frame more than wanted tells whether the template goes on (complete)
    frames = read_frames(path, fps=fps, start_s=start_s, info=info, pix_fmt=pix_fmt,
                         max_frames=n_max + 1)
    # MediaPipe sees swscale's BGR whatever the frames are held as, as prepare's tracker does
    # (on OpenCV's conversion of I420 its landmarks move by up to 2 px): one crop recipe
    pairs = ((f, f) for f in frames) if pix_fmt == "bgr24" else zip(
        frames, read_frames(path, fps=fps, start_s=start_s, info=info, pix_fmt="bgr24",
                            max_frames=n_max + 1), strict=False)
    with raw.open("wb") as store:
        for frame, bgr in pairs:
            if n == n_max:
                complete = False
                break
            store.write(frame.tobytes())
            now = time.perf_counter()
            seconds["decode"] += now - since
            p, status = tracker.step(bgr)
            points.append(p if p is not None else np.full((tracker.n_points, 3), np.nan,
                                                          np.float32))
            statuses.append(status)
            n += 1
            since = time.perf_counter()
            seconds["track"] += since - now
    tracker.close()
    if n == 0:
        tmpdir.cleanup()
        raise InputFileError(path, f"no frame after --start {start_s:g} s",
                             "Use a smaller --start.")
    detections = Detections(np.stack(points).astype(np.float32), np.array(statuses, np.uint8),
                            tracker.multi_face_frames, complete)
    template = Template(RawFrames(raw, n, frame_shape(info.height, info.width, pix_fmt)),
                        NO_TRACK, fps, pix_fmt, tmpdir, seconds)
    return template, detections


def _decode_behind(path: Path, info: MediaInfo, fps: float, start_s: float, n: int,
                   shown_again: bool, pix_fmt: PixelFormat) -> Template:
    """The template's ``n`` frames from ``start_s``, decoded by a thread while the caller
    goes on (its tracking is known: cache.py); a frame read before it is decoded waits."""
    tmpdir = tempfile.TemporaryDirectory(prefix="hygie-template-")
    raw = Path(tmpdir.name) / "frames.u8"
    raw.touch()
    frames = LiveFrames(raw, n, frame_shape(info.height, info.width, pix_fmt), shown_again)
    template = Template(frames, NO_TRACK, fps, pix_fmt, tmpdir, {"decode": 0.0})
    stop = threading.Event()
    thread = threading.Thread(target=_fill, args=(template, frames, path, info, start_s, stop),
                              name="template-decode", daemon=True)
    template.decoder = (thread, stop)
    thread.start()
    return template


def _fill(template: Template, frames: LiveFrames, path: Path, info: MediaInfo, start_s: float,
          stop: threading.Event) -> None:
    error: BaseException | None = None
    n, since = 0, time.perf_counter()
    try:
        with frames.path.open("wb") as store:
            for frame in read_frames(path, fps=template.fps, start_s=start_s, info=info,
                                     pix_fmt=template.pix_fmt, max_frames=len(frames)):
                if stop.is_set():
                    break
                if frames.revisit:
                    store.write(frame.tobytes())
                    store.flush()
                now = time.perf_counter()
                template.seconds["decode"] += now - since
                frames.put(n, frame, stop)  # waits while the reader is far behind
                n += 1
                since = time.perf_counter()
    except BaseException as e:  # raised again by the read that waits for the next frame
        error = e
    frames.filled(error)
