"""Audio front-end: the official Wav2Lip mel-spectrogram, exactly, and per-frame mel windows.

Every audio/video timing constant of the project lives here (STYLE.md, habit 2).

Which mel-window alignment we use, and why
------------------------------------------
The official release cuts the 16-mel-frame window of video frame ``i`` in two different ways:

* ``"train"`` (its training scripts): the window starts two video frames *before* frame ``i``
  (``start = int(80 * (i - 2) / fps)``), so it is centred on the frame: 0.2 s of audio
  covering frames ``i-2 .. i+2``.
* ``"inference"`` (its inference script): the window starts *at* frame ``i``
  (``start = int(i * 80 / fps)``), i.e. 0.08 s later than during training, and the last
  frames are clamped to the end of the spectrogram.

The official weights were therefore trained on centred windows and rendered with shifted
ones. We use ``"train"`` everywhere (fine-tuning and rendering) so that train and render
agree and the mouth is not 2 frames late; windows that run past either end of the audio are
padded by repeating the edge mel frame (the quietest possible assumption), so that every
frame of the audio gets a window and the output length follows the audio exactly.
The ``"inference"`` alignment is kept selectable for comparisons with the official tool.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
from scipy import signal

from hygie_w2l.types import Mel, MelAlignment, MelWindow, Wave


def exact_div(x: int, y: int) -> int:
    assert x % y == 0, f"{x} is not a multiple of {y}"
    return x // y


# Official hyper-parameters (../shared/reference/wav2lip_hparams.json).
SAMPLE_RATE_HZ = 16000
N_FFT = 800
HOP_LENGTH = 200  # samples between mel frames
WIN_LENGTH = 800
N_MELS = 80
FMIN_HZ = 55.0
FMAX_HZ = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0

FPS = 25  # video frames per second of the official recipe and of prepared datasets
MEL_FRAMES_PER_S = exact_div(SAMPLE_RATE_HZ, HOP_LENGTH)  # 80 mel frames/s
MEL_WINDOW_FRAMES = 16  # mel frames per window: 0.2 s
SYNC_T = 5  # video frames per lip-sync window: 0.2 s at 25 fps
TRAIN_WINDOW_LEAD_FRAMES = 2  # the training window starts this many video frames early

_MEL_BASIS = librosa.filters.mel(
    sr=SAMPLE_RATE_HZ, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN_HZ, fmax=FMAX_HZ
).astype(np.float64)  # (80, 401), Slaney scale and norm (librosa's defaults)


def preemphasis(wav: Wave, k: float = PREEMPHASIS) -> np.ndarray:
    """y[n] = x[n] - k x[n-1]; (n_samples,) float64."""
    return signal.lfilter([1.0, -k], [1.0], wav.astype(np.float64))


def melspectrogram(wav: Wave) -> Mel:
    """Official Wav2Lip mel-spectrogram.

    wav: (n_samples,) float32 at 16 kHz. Returns (80, 1 + n_samples // 200) float32 in [-4, 4].
    """
    if wav.ndim != 1:
        raise ValueError(f"expected mono (n_samples,), got shape {wav.shape}")
    spec = librosa.stft(
        y=preemphasis(wav), n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
        window="hann", center=True, pad_mode="reflect",  # librosa 0.7's default, as released
    )
    mel_amp = _MEL_BASIS @ np.abs(spec)
    min_level = math.exp(MIN_LEVEL_DB / 20.0 * math.log(10.0))
    mel_db = 20.0 * np.log10(np.maximum(min_level, mel_amp)) - REF_LEVEL_DB
    scaled = 2.0 * MAX_ABS_VALUE * (mel_db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def n_video_frames(n_samples: int, fps: float = FPS) -> int:
    """Video frames needed to cover ``n_samples`` of 16 kHz audio (the last one may be partial)."""
    return max(1, math.ceil(n_samples * fps / SAMPLE_RATE_HZ - 1e-9))


def mel_window_start(frame_index: int, fps: float, alignment: MelAlignment) -> int:
    """First mel frame of the window of video frame ``frame_index`` (may be < 0 or past the end)."""
    lead = TRAIN_WINDOW_LEAD_FRAMES if alignment == "train" else 0
    return int(MEL_FRAMES_PER_S * (frame_index - lead) / fps)


def mel_window(mel: Mel, frame_index: int, fps: float = FPS,
               alignment: MelAlignment = "train") -> MelWindow:
    """The (80, 16) window of one video frame; edge frames are repeated where it overhangs."""
    n_mel = mel.shape[1]
    if alignment == "inference":
        start = min(mel_window_start(frame_index, fps, alignment), n_mel - MEL_WINDOW_FRAMES)
        start = max(start, 0)
        if n_mel >= MEL_WINDOW_FRAMES:
            return mel[:, start:start + MEL_WINDOW_FRAMES]
    else:
        start = mel_window_start(frame_index, fps, alignment)
    idx = np.clip(np.arange(start, start + MEL_WINDOW_FRAMES), 0, n_mel - 1)
    return mel[:, idx]


def mel_windows(mel: Mel, n_frames: int, fps: float = FPS,
                alignment: MelAlignment = "train") -> np.ndarray:
    """Windows of ``n_frames`` video frames: (n_frames, 80, 16) float32."""
    return np.stack([mel_window(mel, i, fps, alignment) for i in range(n_frames)])


def window_is_complete(mel: Mel, frame_index: int, fps: float = FPS) -> bool:
    """True when the training-aligned window of the frame lies entirely inside the audio."""
    start = mel_window_start(frame_index, fps, "train")
    return start >= 0 and start + MEL_WINDOW_FRAMES <= mel.shape[1]


def frame_rms(wav: Wave, n_frames: int, fps: float = FPS) -> np.ndarray:
    """Root-mean-square level of the audio under each video frame: (n_frames,) float32."""
    hop = SAMPLE_RATE_HZ / fps
    out = np.zeros(n_frames, np.float32)
    for i in range(n_frames):
        chunk = wav[int(round(i * hop)):int(round((i + 1) * hop))]
        out[i] = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) if chunk.size else 0.0
    return out
