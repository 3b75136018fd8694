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
from typing import Protocol, runtime_checkable

import numpy as np

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

# The official code calls librosa (stft, filters.mel). Both are written out here in numpy
# (equal to librosa to float rounding: tests/test_audio.py compares them), because importing
# librosa costs ~4.6 s per command and its first use in a fresh environment ~20 s of numba
# compilation, more than the whole audio stage.

# Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, then logarithmic.
_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _HZ_PER_MEL
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    log_part = _LOG_START_MEL + np.log(np.maximum(hz, _LOG_START_HZ) / _LOG_START_HZ) / _LOG_STEP
    return np.where(hz >= _LOG_START_HZ, log_part, hz / _HZ_PER_MEL)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel >= _LOG_START_MEL,
                    _LOG_START_HZ * np.exp(_LOG_STEP * (mel - _LOG_START_MEL)),
                    _HZ_PER_MEL * mel)


def mel_filterbank(sr: int = SAMPLE_RATE_HZ, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN_HZ, fmax: float = FMAX_HZ) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters on the Slaney mel scale, area-normalised
    (Slaney norm), as ``librosa.filters.mel`` builds them (in float32, as it does)."""
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)),
                                    n_mels + 2))
    spacing = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / spacing[:-1, None]
    upper = ramps[2:] / spacing[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights


_MEL_BASIS = mel_filterbank().astype(np.float64)  # (80, 401)
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # periodic Hann
_STFT_BLOCK = 4096  # frames per FFT call: bounded memory for hour-long audio


def preemphasis(wav: np.ndarray, k: float = PREEMPHASIS) -> np.ndarray:
    """y[n] = x[n] - k x[n-1] (y[0] = x[0]); (n_samples,) float64."""
    x = wav.astype(np.float64)
    y = x.copy()
    y[1:] -= k * x[:-1]
    return y


def _stft_magnitude(padded: np.ndarray) -> np.ndarray:
    """|STFT| of an already padded signal, frames every HOP_LENGTH samples (librosa's
    ``center=False``): (1 + N_FFT // 2, n_frames) float64."""
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    out = np.empty((1 + N_FFT // 2, len(frames)))
    for a in range(0, len(frames), _STFT_BLOCK):
        out[:, a:a + _STFT_BLOCK] = np.abs(np.fft.rfft(frames[a:a + _STFT_BLOCK] * _WINDOW,
                                                       axis=1)).T
    return out


def melspectrogram(wav: Wave) -> Mel:
    """Official Wav2Lip mel-spectrogram.

    wav: (n_samples,) float32 at 16 kHz. Returns (80, 1 + n_samples // 200) float32 in [-4, 4].
    """
    if wav.ndim != 1:
        raise ValueError(f"expected mono (n_samples,), got shape {wav.shape}")
    # librosa 0.7's default, as released: centred frames, the signal reflected at both ends
    padded = np.pad(preemphasis(wav), N_FFT // 2, mode="reflect")
    return _scaled_mel(_stft_magnitude(padded))


def _scaled_mel(magnitude: np.ndarray) -> Mel:
    mel_amp = _MEL_BASIS @ magnitude
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


def frame_rms(wav: Wave | Samples, n_frames: int, fps: float = FPS,
              chunk_frames: int = 1500) -> np.ndarray:
    """Root-mean-square level of the audio under each video frame: (n_frames,) float32.

    Reads ``chunk_frames`` frames of audio at a time, so a :class:`Samples` source of any
    length costs a minute of audio in memory."""
    samples = ArraySamples(wav) if isinstance(wav, np.ndarray) else wav
    hop = SAMPLE_RATE_HZ / fps
    out = np.zeros(n_frames, np.float32)
    for c0 in range(0, n_frames, chunk_frames):
        c1 = min(c0 + chunk_frames, n_frames)
        base = int(round(c0 * hop))
        x = samples.read(base, int(round(c1 * hop))).astype(np.float64)
        for i in range(c0, c1):
            chunk = x[int(round(i * hop)) - base:int(round((i + 1) * hop)) - base]
            out[i] = float(np.sqrt(np.mean(chunk ** 2))) if chunk.size else 0.0
    return out


# ------------------------------------------------------------------- streaming ----
# Render streams its speech: an hour of 16 kHz audio is 230 MB of samples and its mel
# another 92 MB, so it is decoded once to a raw file (media.AudioFile) and each batch
# computes only the mel columns its windows need, exactly equal to the whole-file mel.

class Samples(Protocol):
    """16 kHz mono float32 samples readable by range (an array, or a file on disk)."""

    n_samples: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` clipped to the audio, as float32."""
        ...


class ArraySamples:
    """:class:`Samples` over an array in memory."""

    def __init__(self, wav: Wave) -> None:
        self.wav = wav
        self.n_samples = len(wav)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.wav[max(start, 0):max(stop, 0)]


def n_mel_frames(n_samples: int) -> int:
    return 1 + n_samples // HOP_LENGTH


def mel_columns(samples: Samples, first: int, stop: int) -> Mel:
    """``melspectrogram(all samples)[:, first:stop]``, reading only the samples it needs.

    Mel frame m is the STFT frame centred on sample 200 m, i.e. samples 200 m - 400 ..
    200 m + 399 of the pre-emphasised signal, reflected at both ends as librosa's
    ``center=True`` pads; pre-emphasis needs one sample more on the left.
    """
    n = samples.n_samples
    first, stop = max(first, 0), min(stop, n_mel_frames(n))
    if stop <= first:
        return np.zeros((N_MELS, 0), np.float32)
    if n <= N_FFT:  # shorter than one window: reflection folds more than once
        return melspectrogram(samples.read(0, n))[:, first:stop]
    half = N_FFT // 2
    idx = np.abs(np.arange(first * HOP_LENGTH - half, (stop - 1) * HOP_LENGTH + half))
    idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    x = samples.read(max(lo - 1, 0), hi).astype(np.float64)
    y = preemphasis(x)[1 if lo > 0 else 0:]  # the extra left sample only feeds y[lo]
    return _scaled_mel(_stft_magnitude(y[idx - lo]))


@runtime_checkable
class MelSource(Protocol):
    """The mel-spectrogram of a recording, readable by columns (whole or streamed)."""

    n_mel: int  # mel frames in all

    def columns(self, first: int, stop: int) -> Mel:
        """``melspectrogram(all samples)[:, first:stop]`` (clipped to the recording)."""
        ...


class StreamedMel:
    """:class:`MelSource` of :class:`Samples` (a file on disk): only the columns asked for
    are computed, from the samples they need."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples
        self.n_mel = n_mel_frames(samples.n_samples)

    def columns(self, first: int, stop: int) -> Mel:
        return mel_columns(self.samples, first, stop)


class ArrayMel:
    """:class:`MelSource` of a whole mel-spectrogram in memory (a prepared dataset's)."""

    def __init__(self, mel: Mel) -> None:
        self.mel = mel
        self.n_mel = mel.shape[1]

    def columns(self, first: int, stop: int) -> Mel:
        return self.mel[:, max(first, 0):max(stop, 0)]


class MelWindows:
    """Training-aligned (80, 16) windows of any video frames, computed on demand from a
    :class:`MelSource` (or :class:`Samples`): ``windows(frames)`` equals ``mel_windows`` of
    the whole mel."""

    def __init__(self, source: MelSource | Samples, fps: float = FPS) -> None:
        self.source = source if isinstance(source, MelSource) else StreamedMel(source)
        self.fps, self.n_mel = fps, self.source.n_mel

    def __call__(self, frames: np.ndarray | list[int]) -> np.ndarray:
        starts = np.array([mel_window_start(int(k), self.fps, "train") for k in frames])
        idx = np.clip(starts[:, None] + np.arange(MEL_WINDOW_FRAMES), 0, self.n_mel - 1)
        lo = int(idx.min())
        cols = self.source.columns(lo, int(idx.max()) + 1)
        return np.ascontiguousarray(cols[:, idx - lo].transpose(1, 0, 2))
