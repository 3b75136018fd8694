"""Media I/O through the ffmpeg binary bundled with imageio-ffmpeg (no system ffmpeg needed).

Every ffmpeg command line is built by a small pure function (``*_args``) that the tests check
without running ffmpeg; the functions that run them re-raise failures with ffmpeg's stderr.
Video is streamed: memory depends on one frame, never on the length of the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import imageio_ffmpeg
import numpy as np

from hygie_w2l.atomic import atomic_path, check_writable
from hygie_w2l.audio import SAMPLE_RATE_HZ
from hygie_w2l.errors import FFmpegError, InputFileError, NoAudioStreamError, OutputError
from hygie_w2l.pixels import PixelFormat, frame_shape, supports
from hygie_w2l.types import Wave

DEFAULT_CRF = 17  # x264 constant rate factor: visually lossless for talking heads
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                     "slower", "veryslow"]
DEFAULT_PRESET: X264Preset = "veryfast"  # scripts/bench_x264.py: README "Encoder settings"


@dataclasses.dataclass(frozen=True)
class AudioStream:
    codec: str
    sample_rate_hz: int
    channels: str  # "mono", "stereo", "5.1", ...


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What ffprobe would say about a file, read from the bundled ffmpeg's own report."""

    path: Path
    duration_s: float
    has_video: bool
    video_codec: str | None = None
    width: int = 0  # displayed size, after rotation
    height: int = 0
    fps: float = 0.0  # average frame rate
    tbr: float = 0.0  # ffmpeg's guess of the base (nominal) frame rate
    rotation_deg: int = 0  # rotation applied on display (multiple of 90)
    n_frames: int | None = None  # counted from the packets, when asked
    durations_vary: bool | None = None  # packet durations differ (known when counted)
    truncated: bool = False  # the file ends before its own index says (known when counted)
    audio_streams: tuple[AudioStream, ...] = ()

    @property
    def variable_frame_rate(self) -> bool:
        """True when frames are not evenly spaced in time (phone videos, screen grabs)."""
        if self.durations_vary is not None:
            return self.durations_vary
        return self.has_video and self.tbr > 0 and abs(self.fps - self.tbr) > 0.01 * self.tbr

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_streams)


_EXE_LOCK = threading.Lock()


def ffmpeg_exe() -> str:
    """The bundled ffmpeg (or $IMAGEIO_FFMPEG_EXE). imageio-ffmpeg checks it once per process
    by running ``ffmpeg -version`` (0.12 s): threads asking at once wait for that one check."""
    with _EXE_LOCK:
        return imageio_ffmpeg.get_ffmpeg_exe()


def warm_ffmpeg() -> threading.Thread:
    """Make that check now, in a thread (the CLI starts it while Python imports the models,
    with a core to spare); a missing binary is reported by the first real use, not here."""
    def check() -> None:
        with contextlib.suppress(RuntimeError, OSError):
            ffmpeg_exe()

    thread = threading.Thread(target=check, name="ffmpeg-check", daemon=True)
    thread.start()
    return thread


def widen_pipe(pipe: IO[bytes] | None, frame_bytes: int) -> int:
    """Grow a pipe's kernel buffer towards one frame (Linux; at most the system's
    fs.pipe-max-size, 1 MiB by default; never shrunk) and return its size (0 where it cannot
    be known).
    With the default 64 KiB a 720p frame crosses in 21 fills, each waking the other side:
    a pass-through of 8 s of 720p made 12,500 context switches in ffmpeg and 7,000 in Python
    with it, 5,000 and 340 with 1 MiB, and Python's own CPU fell from 0.34-0.43 to
    0.26-0.31 s."""
    if pipe is None or sys.platform != "linux":
        return 0
    import fcntl

    size = fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ)
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        limit = 1 << 20
    if min(frame_bytes, limit) <= size:  # never shrunk (small frames)
        return size
    try:
        return fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, min(frame_bytes, limit))
    except OSError:  # over a per-user quota (fs.pipe-user-pages-soft): keep what it has
        return size


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


# ---------------------------------------------------------------- argument lists (pure) ----

def probe_args(path: str | Path) -> list[str]:
    return ["-hide_banner", "-nostdin", "-i", str(path)]


def packet_table_args(path: str | Path) -> list[str]:
    # One line per video packet (timestamps, duration) without decoding: fast and exact.
    return ["-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy",
            "-f", "framecrc", "pipe:1"]


def read_frames_args(path: str | Path, fps: float | None, start_s: float = 0.0,
                     pix_fmt: PixelFormat = "bgr24", max_frames: int | None = None) -> list[str]:
    args = ["-v", "error", "-nostdin"]
    if start_s > 0:
        args += ["-ss", f"{start_s:.6f}"]
    args += ["-i", str(path), "-map", "0:v:0", "-an", "-sn"]
    if fps is not None:
        # The fps filter turns variable or foreign frame rates into exact constant ones.
        args += ["-vf", f"fps={fps:g}"]
    else:
        args += ["-fps_mode", "passthrough"]
    if max_frames is not None:  # the decoder stops there instead of running ahead until killed
        args += ["-frames:v", str(max_frames)]
    return args + ["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]


def extract_audio_args(path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> list[str]:
    # rematrix_maxval=1 averages the channels instead of summing them (no clipping).
    return ["-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-vn",
            "-af", "aresample=rematrix_maxval=1.0", "-ac", "1", "-ar", str(sample_rate_hz),
            "-f", "f32le", "pipe:1"]


def write_video_args(out: str | Path, width: int, height: int, fps: float,
                     crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET,
                     pix_fmt: PixelFormat = "bgr24", audio: str | Path | None = None,
                     metadata: Mapping[str, str] | None = None) -> list[str]:
    """ffmpeg's arguments to encode raw frames from stdin; with ``audio``, that file's
    first audio stream is muxed in (AAC) by the same process, tagged with ``metadata``."""
    convert = [] if pix_fmt == "yuv420p" else [
        # yuv420p needs even sizes: pad by one pixel rather than fail on odd inputs.
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        # swscale's default RGB->YUV rounding darkens every frame by ~3 levels.
        "-sws_flags", "accurate_rnd+full_chroma_int"]
    sound = [] if audio is None else ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                                      *_AUDIO_CODEC]
    return ["-v", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-r", f"{fps:g}",
            "-i", "pipe:0", *sound, *convert,
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            *_tags(metadata), "-f", "mp4", str(out)]


# no -shortest: it drops the last frames. The fast coder: half the CPU of the default
# (twoloop) at this rate, as faithful (8 s of speech: 0.17 vs 0.35 CPU-s, 35.1 vs 34.0 dB)
_AUDIO_CODEC = ("-c:a", "aac", "-aac_coder", "fast", "-b:a", "192k")


def _tags(metadata: Mapping[str, str] | None) -> list[str]:
    args = []
    for key, value in (metadata or {}).items():
        args += ["-metadata", f"{key}={value}"]
    # use_metadata_tags keeps custom keys (not only title/comment/...) in the mp4 header.
    return args + ["-movflags", "+faststart+use_metadata_tags"]


def mux_args(video: str | Path, audio: str | Path, out: str | Path,
             metadata: Mapping[str, str] | None = None, audio_start_s: float = 0.0) -> list[str]:
    args = ["-v", "error", "-nostdin", "-y", "-i", str(video)]
    if audio_start_s > 0:
        args += ["-ss", f"{audio_start_s:.6f}"]
    args += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *_AUDIO_CODEC]
    return args + [*_tags(metadata), "-f", "mp4", str(out)]


# -------------------------------------------------------------------- report parsing ----

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: (\w+)(.*)")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+)")
_SIZE = re.compile(r", (\d{2,5})x(\d{2,5})[ ,]")
_FPS = re.compile(r"([\d.]+)(k?) fps")
_TBR = re.compile(r"([\d.]+)(k?) tbr")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")


def _rate(match: re.Match[str] | None) -> float:
    if match is None:
        return 0.0
    return float(match.group(1)) * (1000.0 if match.group(2) else 1.0)


def parse_probe(path: Path, report: str) -> MediaInfo:
    """Turn ffmpeg's ``-i`` report (stderr) into a MediaInfo; pure, unit-tested."""
    duration = _DURATION.search(report)
    duration_s = (int(duration.group(1)) * 3600 + int(duration.group(2)) * 60
                  + float(duration.group(3))) if duration else 0.0
    audio = tuple(AudioStream(m.group(1), int(m.group(2)), m.group(3).strip())
                  for m in _AUDIO.finditer(report))
    video = _VIDEO.search(report)
    if video is None:
        return MediaInfo(path, duration_s, has_video=False, audio_streams=audio)
    details = video.group(2)
    size = _SIZE.search(details + " ")
    width, height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    rotation = _ROTATION.search(report[video.start():])
    rotation_deg = int(round(float(rotation.group(1)))) % 360 if rotation else 0
    if rotation_deg in (90, 270):
        width, height = height, width
    return MediaInfo(path, duration_s, True, video.group(1), width, height,
                     _rate(_FPS.search(details)), _rate(_TBR.search(details)), rotation_deg,
                     audio_streams=audio)


# ------------------------------------------------------------------------- running ----

def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found", "Check the path.")
    if not path.is_file():
        raise InputFileError(path, "is not a file", "Give the path of a video or audio file.")
    if path.stat().st_size == 0:
        raise InputFileError(path, "the file is empty", "Give a complete media file.")
    return path


def probe(path: str | Path, count_frames: bool = True) -> MediaInfo:
    """Duration, frame rate, size, rotation and streams of a media file."""
    path = _require_file(path)
    run = subprocess.run([ffmpeg_exe(), *probe_args(path)], capture_output=True, text=True)
    report = run.stderr
    if "Duration:" not in report or "Invalid data" in report or "moov atom not found" in report:
        last = report.strip().splitlines()[-1] if report.strip() else "no report"
        raise InputFileError(path, f"not a readable media file, corrupt or truncated ({last})",
                             "Re-export or re-download it; ffmpeg must be able to open it.")
    info = parse_probe(path, report)
    if count_frames and info.has_video:
        n_frames, vary, truncated = _packet_table(path)
        info = dataclasses.replace(info, n_frames=n_frames, durations_vary=vary,
                                   truncated=truncated)
    return info


def parse_packet_table(table: str) -> tuple[int, bool]:
    """(number of packets, whether their durations vary) from ffmpeg's framecrc output."""
    durations = [int(line.split(",")[3]) for line in table.splitlines()
                 if line and not line.startswith("#")]
    # The last packet's duration is often a guess; B-frame reordering does not change it.
    body = durations[:-1] or durations
    return len(durations), bool(body) and max(body) - min(body) > 0.02 * max(max(body), 1)


TRUNCATION_SIGNS = ("partial file", "Invalid data found", "stream ends prematurely")


def _packet_table(path: Path) -> tuple[int, bool, bool]:
    """(readable video packets, whether their durations vary, whether the file ends before
    its index says: a download or copy cut short)."""
    run = subprocess.run([ffmpeg_exe(), *packet_table_args(path)], capture_output=True, text=True)
    n_frames, vary = parse_packet_table(run.stdout)
    if run.returncode != 0 or n_frames == 0:
        raise InputFileError(path, "its video stream cannot be read (corrupt or truncated)",
                             "Re-export or re-download it.")
    return n_frames, vary, any(sign in run.stderr for sign in TRUNCATION_SIGNS)


def read_frames(path: str | Path, fps: float | None = None, start_s: float = 0.0,
                info: MediaInfo | None = None, pix_fmt: PixelFormat = "bgr24",
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream the frames of a video as (H, W, 3) uint8 BGR arrays, rotation applied (or,
    with ``pix_fmt`` "yuv420p" and even sizes, (H * 3 / 2, W) I420 arrays: pixels.py).

    With ``fps`` the stream is resampled to exactly that constant rate (duplicating or
    dropping frames), which is how variable-rate and 30-fps videos become 25-fps ones.
    ``max_frames``: at most that many (the decoder stops there: a reader that would stop
    early otherwise kills it, after it decoded ahead as far as the pipe let it).
    """
    info = info or probe(path, count_frames=False)
    if not info.has_video:
        raise InputFileError(path, "has no video stream", "Give a video file (or an image).")
    shape = frame_shape(info.height, info.width, pix_fmt)
    frame_bytes = int(np.prod(shape))
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([ffmpeg_exe(), *read_frames_args(path, fps, start_s, pix_fmt,
                                                                max_frames)],
                                stdout=subprocess.PIPE, stderr=stderr, bufsize=frame_bytes)
        assert proc.stdout is not None
        widen_pipe(proc.stdout, frame_bytes)
        finished = False
        try:
            while len(buf := proc.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(buf, np.uint8).reshape(shape)
            finished = True
        finally:
            proc.stdout.close()
            if not finished:  # the consumer stopped early: not an error
                proc.kill()
            code = proc.wait()
        if code != 0:
            stderr.seek(0)
            raise FFmpegError(f"{path}: decoding failed", stderr.read().decode(errors="replace"))


def _decode_audio(path: str | Path, sample_rate_hz: int, sink: int | IO[bytes]) -> bytes:
    """Run ffmpeg's decoder on the first audio stream of ``path`` (mono float32) into
    ``sink``: an open file, or subprocess.PIPE to get the samples back as bytes."""
    if not probe(path, count_frames=False).has_audio:
        raise NoAudioStreamError(path, "has no audio stream",
                                 "Give the speech separately (e.g. --audio speech.wav).")
    run = subprocess.run([ffmpeg_exe(), *extract_audio_args(path, sample_rate_hz)],
                         stdout=sink, stderr=subprocess.PIPE)
    if run.returncode != 0:
        raise FFmpegError(f"{path}: audio decoding failed", run.stderr.decode(errors="replace"))
    return run.stdout or b""


def _require_samples(path: str | Path, n_samples: int) -> None:
    if n_samples == 0:
        raise InputFileError(path, "the audio stream holds no samples",
                             "Give a recording that contains speech.")


def load_audio(path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Wave:
    """Decode the first audio stream of any file ffmpeg reads to mono float32 at 16 kHz."""
    wav = np.frombuffer(_decode_audio(path, sample_rate_hz, subprocess.PIPE), np.float32).copy()
    _require_samples(path, wav.size)
    return wav


class AudioFile:
    """The first audio stream of a file, decoded once (mono float32, 16 kHz) to a raw file
    in ``workdir`` and read by range: hour-long speech costs 230 MB of disk, not memory.
    Satisfies :class:`hygie_w2l.audio.Samples`."""

    def __init__(self, path: str | Path, workdir: str | Path,
                 sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.raw = Path(workdir) / "audio.f32"
        with open(self.raw, "wb") as sink:
            _decode_audio(path, sample_rate_hz, sink)
        self.n_samples = self.raw.stat().st_size // 4
        _require_samples(path, self.n_samples)

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(start, 0), min(stop, self.n_samples)
        if stop <= start:
            return np.zeros(0, np.float32)
        return np.fromfile(self.raw, np.float32, count=stop - start, offset=4 * start)


class VideoWriter:
    """Streaming H.264 encoder: ``write(frame)`` pipes one frame (BGR, or I420 with
    ``pix_fmt`` "yuv420p": no conversion at all before x264) to ffmpeg; with ``audio``, the
    same process muxes that file's sound in, tagged with ``metadata`` (no second pass)."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET,
                 pix_fmt: PixelFormat = "bgr24", audio: str | Path | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        if not supports(pix_fmt, height, width):
            raise ValueError(f"{pix_fmt} frames need even sizes, not {width}x{height}")
        self.path = Path(path)
        self.size = (width, height)
        self.shape = frame_shape(height, width, pix_fmt)
        self.n_frames = 0
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [ffmpeg_exe(), *write_video_args(path, width, height, fps, crf, preset, pix_fmt,
                                             audio, metadata)],
            stdin=subprocess.PIPE, stderr=self._stderr)
        widen_pipe(self._proc.stdin, int(np.prod(self.shape)))

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match {self.shape}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._fail("the encoder stopped")
        self.n_frames += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        assert self._proc.stdin is not None
        if self._stderr.closed:
            return
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        if self._proc.wait() != 0:
            self._fail("encoding failed")
        self._stderr.close()

    def _fail(self, what: str) -> None:
        self._proc.kill()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        if "No space left" in err:
            raise OutputError(f"{self.path}: the disk is full. Free some space and run again.")
        raise FFmpegError(f"{self.path}: {what}", err)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()
            self._stderr.close()


def run_ffmpeg(args: Sequence[str], what: str) -> None:
    run = subprocess.run([ffmpeg_exe(), *args], capture_output=True, text=True)
    if run.returncode != 0:
        if "No space left" in run.stderr:
            raise OutputError(f"{what}: the disk is full. Free some space and run again.")
        raise FFmpegError(what, run.stderr)


def mux(video: str | Path, audio: str | Path, out: str | Path,
        metadata: Mapping[str, str] | None = None, audio_start_s: float = 0.0) -> Path:
    """Write ``out`` atomically: ``video``'s picture (copied) with ``audio`` encoded to AAC."""
    check_writable(out)
    _require_file(audio)
    with atomic_path(out) as tmp:
        run_ffmpeg(mux_args(video, audio, tmp, metadata, audio_start_s), f"{out}: muxing failed")
    return Path(out)


def read_metadata(path: str | Path) -> dict[str, str]:
    """Container-level metadata tags of a file (lower-case keys)."""
    run = subprocess.run([ffmpeg_exe(), *probe_args(path)], capture_output=True, text=True)
    tags: dict[str, str] = {}
    in_block = False
    for line in run.stderr.splitlines():
        if line.startswith("Input #"):
            continue
        if line.strip() == "Metadata:" and not tags and not in_block:
            in_block = True
            continue
        if in_block:
            if not line.startswith("    ") or line.strip().startswith("Duration"):
                break
            key, _, value = line.strip().partition(":")
            tags[key.strip().lower()] = value.strip()
    return tags
