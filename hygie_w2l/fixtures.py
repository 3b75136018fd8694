"""A deterministic, offline synthetic talking-face clip for tests and the demo.

The face is scikit-image's bundled astronaut photograph (Eileen Collins, public domain). A
speech-like audio track (syllables at about 4 Hz, a voiced source through vowel formants,
pauses) drives the opening of the mouth frame by frame: the lower lip and jaw are displaced
down and the upper lip up by a smooth warp, and the gap between the lips is filled with a
shaded mouth interior. Small head motion and occasional blinks keep the clip "living".
The per-frame ground-truth opening is saved beside the video (``<name>.truth.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from hygie_w2l.atomic import atomic_path
from hygie_w2l.audio import FPS, SAMPLE_RATE_HZ, n_video_frames
from hygie_w2l.media import VideoWriter, mux

# Geometry of the astronaut photograph (512 x 512), measured once with MediaPipe FaceMesh and
# re-checked by tests/test_fixtures.py: mouth corners, the line between the teeth, eyes, chin.
MOUTH_LEFT_PX = (201.8, 139.2)
MOUTH_RIGHT_PX = (245.0, 141.0)
MOUTH_SPLIT_Y_PX = 149.0  # the dark line between upper and lower teeth, at the centre
CHIN_Y_PX = 177.4
EYES_PX = ((204.0, 101.0), (247.0, 103.0))
EYE_HALF_WIDTH_PX = 10.0
FACE_CROP_PX = (125, 30, 325, 230)  # x1, y1, x2, y2: the head with some margin

MAX_GAP_FRACTION = 1.3  # largest lip gap, as a fraction of half the mouth width
CAVITY_BGR = (22.0, 16.0, 40.0)  # the dark back of the mouth
TONGUE_BGR = (45.0, 38.0, 95.0)  # lighter, reddish, at the bottom of the gap


@dataclasses.dataclass(frozen=True)
class FixtureConfig:
    seconds: float = 4.0
    size_px: int = 320  # output frames are size_px x size_px
    fps: int = FPS
    seed: int = 0
    head_motion_px: float = 3.0
    blink_every_s: float = 2.7


@dataclasses.dataclass(frozen=True)
class Speech:
    wav: np.ndarray  # (n_samples,) float32 in [-1, 1] at 16 kHz
    envelope: np.ndarray  # (n_samples,) float32 in [0, 1]: how open the mouth is
    openness: np.ndarray  # (n_samples,) float32 in [0, 1]: vowel openness (F1) per sample


def synth_speech(seconds: float, seed: int = 0) -> Speech:
    """Speech-like audio: syllables with a voiced source shaped by moving formants."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE_HZ))
    t = np.arange(n) / SAMPLE_RATE_HZ
    env = np.zeros(n)
    f1 = np.full(n, 500.0)
    f2 = np.full(n, 1500.0)
    pos = 0.25
    while pos < seconds - 0.2:
        dur = rng.uniform(0.14, 0.3)
        a, b = int(pos * SAMPLE_RATE_HZ), min(n, int((pos + dur) * SAMPLE_RATE_HZ))
        env[a:b] = rng.uniform(0.55, 1.0) * np.sin(np.linspace(0, np.pi, b - a)) ** 0.5
        f1[a:b], f2[a:b] = rng.uniform(300, 850), rng.uniform(900, 2300)
        pos += dur + (rng.uniform(0.35, 0.7) if rng.random() < 0.18 else rng.uniform(0.02, 0.1))
    f0 = 115 + 15 * np.sin(2 * np.pi * 0.7 * t) + 5 * rng.standard_normal(n).cumsum() / n
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE_HZ
    source = sum(np.sin(k * phase) / k for k in range(1, 30))  # glottal-like sawtooth
    voiced = _formant_filter(source, f1, 80.0) + 0.6 * _formant_filter(source, f2, 120.0)
    wav = voiced * env + 0.003 * rng.standard_normal(n)
    wav = 0.5 * wav / max(float(np.abs(wav).max()), 1e-9)
    openness = np.clip((f1 - 250.0) / 650.0, 0.5, 1.0)
    return Speech(wav.astype(np.float32), env.astype(np.float32), openness.astype(np.float32))


def _formant_filter(x: np.ndarray, freq_hz: np.ndarray, bandwidth_hz: float) -> np.ndarray:
    """Second-order resonator whose centre frequency follows ``freq_hz`` sample by sample."""
    r = math.exp(-math.pi * bandwidth_hz / SAMPLE_RATE_HZ)
    y = np.zeros_like(x)
    c1 = 2 * r * np.cos(2 * np.pi * freq_hz / SAMPLE_RATE_HZ)
    c2 = -r * r
    y1 = y2 = 0.0
    for i in range(len(x)):  # a few seconds of audio: fine in pure Python (~0.1 s/s)
        y0 = x[i] * (1 - r) + c1[i] * y1 + c2 * y2
        y[i], y2, y1 = y0, y1, y0
    return y


def frame_openings(speech: Speech, n_frames: int, fps: float) -> np.ndarray:
    """Ground-truth mouth opening per video frame, (n_frames,) float32 in [0, 1]."""
    out = np.zeros(n_frames, np.float32)
    hop = SAMPLE_RATE_HZ / fps
    for i in range(n_frames):
        a, b = int(i * hop), int((i + 1) * hop)
        if b > a:
            out[i] = float(np.mean(speech.envelope[a:b] * speech.openness[a:b]))
    return np.clip(out / max(float(out.max()), 1e-6), 0.0, 1.0)


def _mouth_maps(opening: float, shape: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source coordinates (map_x, map_y) for cv2.remap, the interior's alpha and the depth
    in the gap (0 at the upper lip, 1 at the lower one), all (H, W) float32."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    (lx, ly), (rx, ry) = MOUTH_LEFT_PX, MOUTH_RIGHT_PX
    cx, half = (lx + rx) / 2, (rx - lx) / 2
    split = MOUTH_SPLIT_Y_PX + (xs - cx) * (ry - ly) / (rx - lx)
    gap = MAX_GAP_FRACTION * half * opening
    lateral = np.sqrt(np.clip(1 - ((xs - cx) / (half * 0.95)) ** 2, 0, 1))  # ellipse profile
    wide = np.exp(-(((xs - cx) / (half * 1.4)) ** 2))  # the jaw moves wider than the lips
    below = np.clip(ys - split, 0, None)
    near = np.exp(-below / (0.35 * half))
    fade_chin = np.clip(1 - (ys - CHIN_Y_PX) / (0.9 * half), 0, 1)
    down = 0.75 * gap * (near * lateral + (1 - near) * wide) * fade_chin
    above = np.clip(split - ys, 0, None)
    up = 0.25 * gap * lateral * np.exp(-above / (0.4 * half))
    map_y = np.where(ys >= split, ys - down, ys + up)
    lo, hi = split - up, split + 0.75 * gap * lateral
    alpha = np.clip(np.minimum(ys - lo, hi - ys) + 0.5, 0, 1) * (lateral > 0)
    depth = np.clip((ys - lo) / np.maximum(hi - lo, 1e-3), 0, 1)
    return xs, map_y.astype(np.float32), alpha.astype(np.float32), depth.astype(np.float32)


def _blink_maps(closed: float, map_y: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Squash each eye vertically around its centre line (in place on map_y)."""
    for ex, ey in EYES_PX:
        weight = np.exp(-(((xs - ex) / (1.3 * EYE_HALF_WIDTH_PX)) ** 2
                          + ((ys - ey) / (0.9 * EYE_HALF_WIDTH_PX)) ** 2) * 2)
        stretch = 1 + 2.5 * closed * weight
        map_y[:] = np.where(weight > 0.02, ey + (map_y - ey) * stretch, map_y)


def render_frame(base: np.ndarray, opening: float, blink: float, head_dx: float,
                 head_dy: float, head_deg: float, size_px: int) -> np.ndarray:
    """One (size_px, size_px, 3) uint8 BGR frame of the warped, cropped astronaut."""
    h, w = base.shape[:2]
    xs, map_y, alpha, depth = _mouth_maps(opening, (h, w))
    if blink > 0:
        _blink_maps(blink, map_y, xs, np.mgrid[0:h, 0:w][0].astype(np.float32))
    warped = cv2.remap(base, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    tongue = np.clip((depth - 0.7) / 0.3, 0, 1)[..., None]
    interior = (np.array(CAVITY_BGR, np.float32) * (1 - tongue)
                + np.array(TONGUE_BGR, np.float32) * tongue)
    warped = (warped * (1 - alpha[..., None]) + interior * alpha[..., None]).astype(np.uint8)
    x1, y1, x2, y2 = FACE_CROP_PX
    scale = size_px / (x2 - x1)
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    m = np.asarray(cv2.getRotationMatrix2D(centre, head_deg, scale), np.float64)
    m[:, 2] += (size_px / 2 - centre[0] + head_dx, size_px / 2 - centre[1] + head_dy)
    return cv2.warpAffine(warped, m, (size_px, size_px), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REFLECT)


def _blink_curve(n_frames: int, fps: float, every_s: float, rng: np.random.Generator
                 ) -> np.ndarray:
    curve = np.zeros(n_frames, np.float32)
    t = rng.uniform(0.6, every_s)
    while t < n_frames / fps:
        centre = t * fps
        idx = np.arange(n_frames)
        curve = np.maximum(curve, np.clip(1 - np.abs(idx - centre) / 2.5, 0, 1))
        t += every_s * rng.uniform(0.7, 1.3)
    return curve


def write_fixture(out: str | Path, config: FixtureConfig = FixtureConfig()) -> dict:
    """Write the clip (H.264 + AAC mp4) and ``<out stem>.truth.json``; returns the truth."""
    from skimage import data

    out = Path(out)
    rng = np.random.default_rng(config.seed + 1)
    speech = synth_speech(config.seconds, config.seed)
    n_frames = n_video_frames(len(speech.wav), config.fps)
    opening = frame_openings(speech, n_frames, config.fps)
    blink = _blink_curve(n_frames, config.fps, config.blink_every_s, rng)
    base = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    t = np.arange(n_frames) / config.fps
    amp = config.head_motion_px
    with tempfile.TemporaryDirectory(prefix="hygie-synth-") as tmp:
        video, wav = Path(tmp) / "video.mp4", Path(tmp) / "speech.wav"
        sf.write(wav, speech.wav, SAMPLE_RATE_HZ, subtype="PCM_16")
        with VideoWriter(video, config.size_px, config.size_px, config.fps) as writer:
            for i in range(n_frames):
                writer.write(render_frame(
                    base, float(opening[i]), float(blink[i]),
                    amp * math.sin(2 * math.pi * 0.23 * t[i]),
                    0.6 * amp * math.sin(2 * math.pi * 0.17 * t[i] + 1.0),
                    1.5 * math.sin(2 * math.pi * 0.11 * t[i]), config.size_px))
        mux(video, wav, out, {"comment": "hygie-w2l synthetic fixture (astronaut, skimage)"})
    truth = {"fps": config.fps, "n_frames": n_frames, "seconds": config.seconds,
             "config": dataclasses.asdict(config), "opening": opening.round(5).tolist(),
             "blink": blink.round(3).tolist()}
    with atomic_path(truth_path(out)) as tmp_json:
        tmp_json.write_text(json.dumps(truth, indent=1))
    return truth


def truth_path(video: str | Path) -> Path:
    video = Path(video)
    return video.with_name(video.stem + ".truth.json")
