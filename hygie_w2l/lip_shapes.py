"""The lips model at render time, without torch: the audio's lip shapes from the fitted
model's numbers (lips.py fits it), in numpy.

A lips render runs no image network, and importing torch costs a render 1.5-2 s of its
process's 6 (2-core CPU, 8 s of 720p with a warm template cache). So every lips checkpoint
we write carries a sidecar beside it, ``best.pt`` -> ``best.lips.npz`` (:func:`save_shapes`):
the convolutions' weights, the PCA basis, scales and gains, the config, and the SHA-256 of
the ``.pt`` it was written with. A render reads the sidecar (``np.load`` without pickle) when
it matches its ``.pt``, and the ``.pt`` through torch otherwise (a run written before the
sidecars, or a ``.pt`` copied alone): the same shapes either way (tests/test_lips.py).

Shapes are "shape codes" (library.shape_code): points in the canonical mouth frame,
centred and divided by its width, (80,) float32.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import erf

from hygie_w2l.atomic import atomic_path
from hygie_w2l.audio import FPS, MEL_FRAMES_PER_S, N_MELS, ArrayMel, MelSource
from hygie_w2l.geometry import HD_CORNER_SPAN
from hygie_w2l.models.loaded import checkpoint_file

N_LIP_POINTS = 40  # MediaPipe's outer + inner lip rings
CODE_DIMS = 2 * N_LIP_POINTS
CONVOLUTIONS = ((5, 1), (5, 2), (5, 4), (1, 1))  # (kernel, dilation) of each member's layers
RECEPTIVE_FIELD = 1 + sum((k - 1) * d for k, d in CONVOLUTIONS)  # 29 mel frames
STREAM_CHUNK_FRAMES = 1500  # video frames predicted at a time when streaming (a minute)
SIDECAR_SUFFIX = ".lips.npz"
SIDECAR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LipsConfig:
    hidden: int = 32  # channels of each convolution
    n_components: int = 8  # PCA coefficients predicted
    members: int = 3  # networks averaged (each leaves out one fold of the training split)
    steps: int = 300  # optimisation steps per member
    crop_mel_frames: int = 256  # mel frames per training sequence (3.2 s)
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-3
    dropout: float = 0.3
    augment_gain: float = 0.2  # normalised mel scaled by 1 +- this
    augment_offset: float = 0.1  # and shifted by N(0, this)
    augment_noise: float = 0.1  # plus N(0, this) per bin
    smooth_frames: float = 1.5  # Gaussian smoothing of the predictions (video frames)
    max_gain: float = 3.0  # cap of the shrinkage-undoing gain
    fps: float = FPS
    seed: int = 0


Layer = tuple[np.ndarray, np.ndarray]  # weight (out, in, kernel) float32, bias (out,)


def layer_widths(config: LipsConfig) -> tuple[int, ...]:
    """Channels into each of CONVOLUTIONS and out of the last: mel bands, hidden, components."""
    return (N_MELS, *[config.hidden] * (len(CONVOLUTIONS) - 1), config.n_components)


@dataclasses.dataclass(frozen=True)
class LipShapes:
    """A fitted lips model as arrays: normalised mel (80, T) -> lip shape codes."""

    config: LipsConfig
    members: tuple[tuple[Layer, ...], ...]  # per member, its CONVOLUTIONS' weights
    pca_mean: np.ndarray  # (80,) the training split's mean shape code
    pca_components: np.ndarray  # (n_components, 80)
    target_std: np.ndarray  # (n_components,) std of each coefficient (training split)
    gain: np.ndarray  # (n_components,) undoes the shrinkage of the predictions

    def coefficients(self, mel: np.ndarray) -> np.ndarray:
        """Normalised mel (80, T) float32 -> (T, n_components) standardised coefficients:
        the members' mean (LipsModel.forward, in eval mode)."""
        out = np.mean([_member_forward(layers, mel) for layers in self.members], axis=0)
        return np.ascontiguousarray(out.T, dtype=np.float32)

    def decode(self, coefficients: np.ndarray) -> np.ndarray:
        """(N, n_components) standardised coefficients -> (N, 80) shape codes, gain applied."""
        return (coefficients * (self.target_std * self.gain)) @ self.pca_components \
            + self.pca_mean


def _member_forward(layers: tuple[Layer, ...], x: np.ndarray) -> np.ndarray:
    """One member's convolutions over (C, T) float32 (zero padding, 'same' length), an exact
    GELU between them (torch's default)."""
    for n, ((weight, bias), (kernel, dilation)) in enumerate(zip(layers, CONVOLUTIONS,
                                                                 strict=True)):
        pad = (kernel - 1) * dilation // 2
        xp = np.pad(x, ((0, 0), (pad, pad)))
        t = x.shape[1]
        taps = np.stack([xp[:, j * dilation:j * dilation + t] for j in range(kernel)], 1)
        x = weight.reshape(len(weight), -1) @ taps.reshape(-1, t) + bias[:, None]
        if n < len(layers) - 1:
            x = (0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)
    return x


# ---------------------------------------------------------------- features ----

def normalise_mel(mel: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> np.ndarray:
    """(80, T) log-mel -> each band to mean 0, std 1 over the recording (or ``stats``)."""
    mean, std = stats if stats is not None else mel_source_stats(ArrayMel(mel))
    return ((mel - mean[:, None]) / std[:, None]).astype(np.float32)


def frame_centres(n_frames: int, fps: float) -> np.ndarray:
    """The mel frame at the middle of each video frame (frame i spans i/fps .. (i+1)/fps)."""
    return np.round((np.arange(n_frames) + 0.5) * MEL_FRAMES_PER_S / fps).astype(np.int64)


def mel_source_stats(source: MelSource, chunk_mel_frames: int = 24_000
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of a whole recording's mel, five minutes at a time."""
    s1, s2 = np.zeros(N_MELS), np.zeros(N_MELS)
    for a in range(0, source.n_mel, chunk_mel_frames):
        m = source.columns(a, min(a + chunk_mel_frames, source.n_mel)).astype(np.float64)
        s1 += m.sum(1)
        s2 += (m ** 2).sum(1)
    n = max(source.n_mel, 1)
    mean = s1 / n
    return mean, np.maximum(np.sqrt(np.maximum(s2 / n - mean ** 2, 0)), 1e-3)


def stream_codes(shapes: LipShapes, source: MelSource, n_frames: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, shape codes (n, 80)) of video frames 0 .. n_frames - 1 of a recording,
    a minute at a time: the mel is normalised by the whole recording's statistics (a first
    pass) and each chunk is computed with margins (receptive field, smoothing), so the
    result equals one pass over everything."""
    config = shapes.config
    stats = mel_source_stats(source)
    margin = int(np.ceil(4 * config.smooth_frames)) + 2  # frames of smoothing context
    half_rf = RECEPTIVE_FIELD // 2 + 2
    centres = frame_centres(n_frames, config.fps)
    for a in range(0, n_frames, STREAM_CHUNK_FRAMES):
        b = min(a + STREAM_CHUNK_FRAMES, n_frames)
        lo_f, hi_f = max(a - margin, 0), min(b + margin, n_frames)
        lo_m = max(int(centres[lo_f]) - half_rf, 0)
        mel = normalise_mel(source.columns(lo_m, int(centres[hi_f - 1]) + half_rf + 1), stats)
        if mel.shape[1] == 0:  # frames past the end of the audio: its last column
            mel = normalise_mel(source.columns(source.n_mel - 1, source.n_mel), stats)
            lo_m = source.n_mel - 1
        out = shapes.coefficients(mel)
        coefficients = out[np.clip(centres[lo_f:hi_f] - lo_m, 0, len(out) - 1)]
        if config.smooth_frames > 0 and len(coefficients) > 1:
            coefficients = gaussian_filter1d(coefficients, config.smooth_frames, axis=0,
                                             mode="nearest")
        yield a, shapes.decode(coefficients[a - lo_f:b - lo_f]).astype(np.float32)


def predict_codes(shapes: LipShapes, source: MelSource, n_frames: int) -> np.ndarray:
    """Shape codes (n_frames, 80) of a whole recording (for a dataset; renders stream)."""
    return np.concatenate([codes for _, codes in stream_codes(shapes, source, n_frames)])


def code_opening(codes: np.ndarray) -> np.ndarray:
    """Mouth opening (inner-lip height / corner-to-corner width) of shape codes (N, 80),
    measured along the canonical axes (the corners lie on its horizontal)."""
    p = codes.reshape(len(codes), N_LIP_POINTS, 2)
    half = N_LIP_POINTS // 2
    height = p[:, half:, 1].max(1) - p[:, half:, 1].min(1)
    width = p[:, :half, 0].max(1) - p[:, :half, 0].min(1)
    return height / np.maximum(width, 1e-6)


def code_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean lip-landmark distance between shape codes, in mouth widths: (N,)."""
    d = np.linalg.norm((a - b).reshape(len(a), N_LIP_POINTS, 2), axis=2).mean(1)
    return d / HD_CORNER_SPAN  # a code is in canonical widths; the mouth spans half of one


# ----------------------------------------------------------------- sidecar ----

def sidecar_path(checkpoint: str | Path) -> Path:
    """runs/NAME/best.pt (or the run folder) -> runs/NAME/best.lips.npz."""
    return checkpoint_file(checkpoint).with_suffix(SIDECAR_SUFFIX)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_shapes(shapes: LipShapes, checkpoint: Path) -> Path:
    """Write ``checkpoint``'s sidecar (atomically), bound to the ``.pt`` as it is now."""
    arrays = {f"m{i}_l{j}_{part}": a for i, layers in enumerate(shapes.members)
              for j, layer in enumerate(layers) for part, a in zip("wb", layer, strict=True)}
    about = {"version": SIDECAR_VERSION, "pt_bytes": checkpoint.stat().st_size,
             "pt_sha256": _sha256(checkpoint), "config": dataclasses.asdict(shapes.config)}
    out = sidecar_path(checkpoint)
    with atomic_path(out) as tmp, tmp.open("wb") as f:
        np.savez(f, about=np.array(json.dumps(about)), pca_mean=shapes.pca_mean,
                 pca_components=shapes.pca_components, target_std=shapes.target_std,
                 gain=shapes.gain, **arrays)
    return out


def read_shapes(checkpoint: str | Path) -> LipShapes | None:
    """The lips model in ``checkpoint``'s sidecar, or None where there is none, it
    does not belong to the ``.pt`` beside it (written again since), or it cannot be read:
    the caller then loads the ``.pt`` itself, which says what is wrong with it if anything."""
    pt, path = checkpoint_file(checkpoint), sidecar_path(checkpoint)
    if not path.is_file() or not pt.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            about = json.loads(str(z["about"]))
            if (about["version"] != SIDECAR_VERSION or about["pt_bytes"] != pt.stat().st_size
                    or about["pt_sha256"] != _sha256(pt)):
                return None
            config = LipsConfig(**about["config"])
            members = tuple(tuple((z[f"m{i}_l{j}_w"], z[f"m{i}_l{j}_b"])
                                  for j in range(len(CONVOLUTIONS)))
                            for i in range(config.members))
            shapes = LipShapes(config, members, z["pca_mean"], z["pca_components"],
                               z["target_std"], z["gain"])
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError):  # a truncated copy, a hand-made file: the .pt says the rest
        return None
    return shapes if _layout_fits(shapes) else None


def _layout_fits(shapes: LipShapes) -> bool:
    """The arrays have the shapes this code's CONVOLUTIONS and the config ask for."""
    c = shapes.config
    widths = layer_widths(c)
    expected = [((widths[j + 1], widths[j], k), (widths[j + 1],))
                for j, (k, _) in enumerate(CONVOLUTIONS)]
    return (all([(w.shape, b.shape) for w, b in layers] == expected
                for layers in shapes.members)
            and shapes.pca_components.shape == (c.n_components, CODE_DIMS)
            and shapes.pca_mean.shape == (CODE_DIMS,)
            and shapes.gain.shape == shapes.target_std.shape == (c.n_components,))
