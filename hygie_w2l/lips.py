"""The audio-to-lips model: for each video frame, the 40 lip landmarks (outer then inner
ring) in the canonical mouth frame, as the mouth library stores them (the frame's own mouth
corners at fixed points: crops.py, kind "hd"), from the speech around the frame. Eight
numbers a frame are learnable from half a minute of one person; 30,000 pixels are not: the
person's real mouths come from their library (library.py). A render places the predicted
shape on the template's eye-anchored corners (kind "lips"), which do not move with the
template's own mouth.

* Features: the official log-mel (80 bands, 80 frames/s), each band normalised over the
  whole recording (mean 0, std 1): another microphone or a louder voice shifts a log-mel
  band by a constant, which this removes.
* Targets: the first ``n_components`` PCA coefficients of the lip shape (PCA of the
  training split), each divided by its standard deviation.
* Model: small dilated 1-D convolution networks over mel time (receptive field 29 mel
  frames, 0.36 s centred on the frame), read at each video frame's centre; ``members`` of
  them, each trained on the training split minus one contiguous fold, averaged. Their
  out-of-fold predictions calibrate a per-component gain that undoes the shrinkage of a
  regression (without it the mouths open about half as wide as the real ones).
* Training augments the mel (a random gain, offset and noise), and predictions are
  smoothed over ``smooth_frames`` video frames (a Gaussian).

Shapes are "shape codes" (library.shape_code): points in the canonical frame, centred and
divided by its width, (80,) float32, so they do not depend on the resolution.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from hygie_w2l.audio import FPS, MEL_FRAMES_PER_S, N_MELS, ArrayMel, MelSource
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import HD_CORNER_SPAN, transform_points
from hygie_w2l.library import lip_points, shape_code
from hygie_w2l.metrics import pearson

N_LIP_POINTS = 40  # MediaPipe's outer + inner lip rings
CODE_DIMS = 2 * N_LIP_POINTS
RECEPTIVE_FIELD = 29  # mel frames: 1 + 4 * (1 + 2 + 4) of the three kernel-5 convolutions
STREAM_CHUNK_FRAMES = 1500  # video frames predicted at a time when streaming (a minute)


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


def _member(config: LipsConfig) -> nn.Sequential:
    h, p = config.hidden, config.dropout
    return nn.Sequential(
        nn.Conv1d(N_MELS, h, 5, padding=2), nn.GELU(), nn.Dropout(p),
        nn.Conv1d(h, h, 5, padding=4, dilation=2), nn.GELU(), nn.Dropout(p),
        nn.Conv1d(h, h, 5, padding=8, dilation=4), nn.GELU(),
        nn.Conv1d(h, config.n_components, 1))


class LipsModel(nn.Module):
    """Normalised mel (B, 80, T) -> lip shape codes; everything needed to use it is in its
    state (PCA basis, target scales, gains) and its ``config``."""

    pca_mean: torch.Tensor  # (80,) the training split's mean shape code
    pca_components: torch.Tensor  # (n_components, 80)
    target_std: torch.Tensor  # (n_components,) std of each coefficient (training split)
    gain: torch.Tensor  # (n_components,) undoes the shrinkage of the predictions

    def __init__(self, config: LipsConfig = LipsConfig()) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(_member(config) for _ in range(config.members))
        c = config.n_components
        self.register_buffer("pca_mean", torch.zeros(CODE_DIMS))
        self.register_buffer("pca_components", torch.zeros(c, CODE_DIMS))
        self.register_buffer("target_std", torch.ones(c))
        self.register_buffer("gain", torch.ones(c))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, 80, T) normalised -> (B, n_components, T) standardised coefficients."""
        return torch.stack([m(mel) for m in self.members]).mean(0)

    def decode(self, coefficients: np.ndarray) -> np.ndarray:
        """(N, n_components) standardised coefficients -> (N, 80) shape codes, gain applied."""
        scale = (self.target_std * self.gain).numpy()
        return (coefficients * scale) @ self.pca_components.numpy() + self.pca_mean.numpy()


# ---------------------------------------------------------------- features ----

def normalise_mel(mel: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> np.ndarray:
    """(80, T) log-mel -> each band to mean 0, std 1 over the recording (or ``stats``)."""
    mean, std = stats if stats is not None else mel_source_stats(ArrayMel(mel))
    return ((mel - mean[:, None]) / std[:, None]).astype(np.float32)


def frame_centres(n_frames: int, fps: float) -> np.ndarray:
    """The mel frame at the middle of each video frame (frame i spans i/fps .. (i+1)/fps)."""
    return np.round((np.arange(n_frames) + 0.5) * MEL_FRAMES_PER_S / fps).astype(np.int64)


def stream_codes(model: LipsModel, source: MelSource, n_frames: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, shape codes (n, 80)) of video frames 0 .. n_frames - 1 of a recording,
    a minute at a time: the mel is normalised by the whole recording's statistics (a first
    pass) and each chunk is computed with margins (receptive field, smoothing), so the
    result equals one pass over everything."""
    config = model.config
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
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(mel[None]))[0].T.numpy()
        coefficients = out[np.clip(centres[lo_f:hi_f] - lo_m, 0, len(out) - 1)]
        if config.smooth_frames > 0 and len(coefficients) > 1:
            coefficients = gaussian_filter1d(coefficients, config.smooth_frames, axis=0,
                                             mode="nearest")
        yield a, model.decode(coefficients[a - lo_f:b - lo_f]).astype(np.float32)


def predict_codes(model: LipsModel, source: MelSource, n_frames: int) -> np.ndarray:
    """Shape codes (n_frames, 80) of a whole recording (for a dataset; renders stream)."""
    return np.concatenate([codes for _, codes in stream_codes(model, source, n_frames)])


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


# ---------------------------------------------------------------- targets ----

def lip_codes(data: PreparedDataset) -> np.ndarray:
    """(N, 80) shape codes of every frame of a dataset in the canonical mouth frame; NaN
    where the frame has no face.

    Measured (5-fold CV over talk_selfie_24s): shapes in this frame are predicted about as
    well (opening r 0.65) as in the eye-anchored one (0.63), but with an LMD below the mean
    shape's (0.030 vs 0.032) where the eye-anchored frame's is above it (0.089 vs 0.080):
    where the mouth sits relative to the eyes is head motion, not speech."""
    out = np.full((data.n_frames, CODE_DIMS), np.nan, np.float32)
    for i in np.flatnonzero(data.usable):
        m = data.plan.hd[i]
        if np.isfinite(m).all():
            pts = transform_points(lip_points(np.asarray(data.landmarks[i])), m)
            if len(pts) == N_LIP_POINTS:
                out[i] = shape_code(pts, data.plan.hd_hw)
    return out


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


# ---------------------------------------------------------------- fitting ----

@dataclasses.dataclass(frozen=True)
class LipsReport:
    """Held-out (validation split) quality of the predicted shapes, and the cost."""

    opening_r: float  # correlation of predicted and real mouth opening
    lmd: float  # mean lip-landmark distance, in mouth widths
    lmd_mean_shape: float  # the same for the training split's mean shape (the floor)
    opening_std: float  # how much the predicted mouth opens and closes ...
    opening_std_real: float  # ... and the real one
    train_frames: int
    val_frames: int
    seconds: float

    def text(self) -> str:
        return (f"held-out lip shapes ({self.val_frames} frames): opening r "
                f"{self.opening_r:.3f}, LMD {self.lmd:.4f} (mean shape {self.lmd_mean_shape:.4f}"
                f"), opening std {self.opening_std:.3f} (real {self.opening_std_real:.3f}); "
                f"trained on {self.train_frames} frames in {self.seconds:.1f} s")


def _fold_masks(train: np.ndarray, members: int, guard: int) -> list[tuple[np.ndarray,
                                                                           np.ndarray]]:
    """(fit, held) frame masks per member: contiguous folds of the training frames, each
    held out with a guard so the receptive field does not see it from the fit frames."""
    bounds = np.linspace(train.min(), train.max() + 1, members + 1).astype(int)
    out = []
    for j in range(members):
        a, b = bounds[j], bounds[j + 1]
        held = (train >= a) & (train < b)
        fit = (train < a - guard) | (train >= b + guard) if members > 1 else held
        out.append((fit, held))
    return out


def _train_member(net: nn.Module, mel: np.ndarray, targets: np.ndarray,
                  weight: np.ndarray, config: LipsConfig, rng: np.random.Generator) -> None:
    """A few hundred Adam steps on random crops of the mel; targets (T_mel, C) per mel
    frame, weight (T_mel,) 1 where the frame is one to learn from."""
    opt = torch.optim.AdamW(net.parameters(), config.lr, weight_decay=config.weight_decay)
    crop = min(config.crop_mel_frames, mel.shape[1])
    net.train()
    for _ in range(config.steps):
        starts = rng.integers(0, mel.shape[1] - crop + 1, config.batch)
        x = np.stack([mel[:, s:s + crop] for s in starts])
        x = x * rng.uniform(1 - config.augment_gain, 1 + config.augment_gain, (len(x), 1, 1))
        x = x + rng.normal(0, config.augment_offset, (len(x), 1, 1))
        x = x + rng.normal(0, config.augment_noise, x.shape)
        y = torch.from_numpy(np.stack([targets[s:s + crop].T for s in starts]))
        w = torch.from_numpy(np.stack([weight[s:s + crop] for s in starts]))[:, None]
        out = net(torch.from_numpy(x.astype(np.float32)))
        loss = (((out - y) ** 2) * w).sum() / (w.sum() * out.shape[1]).clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()


def fit_lips(data: PreparedDataset, config: LipsConfig = LipsConfig()
             ) -> tuple[LipsModel, LipsReport]:
    """Fit the model on the training split of ``data``; report it on the validation split."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    config = dataclasses.replace(config, fps=data.fps)
    codes = lip_codes(data)
    ok = np.isfinite(codes[:, 0])
    train = np.arange(*data.split.train)
    train = train[ok[train]]
    if len(train) < 2 * config.members * RECEPTIVE_FIELD // 3:
        raise HygieError(f"{data.root}: only {len(train)} training frames with a face; the "
                         "lips model needs a few seconds more video.")
    model = LipsModel(config)
    mean = codes[train].mean(0)
    _, _, vt = np.linalg.svd(codes[train] - mean, full_matrices=False)
    components = vt[:config.n_components]
    coefficients = np.zeros((data.n_frames, config.n_components), np.float32)
    coefficients[ok] = (codes[ok] - mean) @ components.T
    target_std = coefficients[train].std(0) + 1e-6
    model.pca_mean.copy_(torch.from_numpy(mean))
    model.pca_components.copy_(torch.from_numpy(components))
    model.target_std.copy_(torch.from_numpy(target_std.astype(np.float32)))
    mel = normalise_mel(data.mel)
    oof = _fit_members(model, mel, coefficients / target_std, train, config, rng)
    gain = coefficients[train].std(0) / np.maximum((oof * target_std).std(0), 1e-6)
    model.gain.copy_(torch.from_numpy(np.clip(gain, 1.0, config.max_gain).astype(np.float32)))
    return model, _report(model, data, codes, train, time.perf_counter() - started)


def _fit_members(model: LipsModel, mel: np.ndarray, scaled: np.ndarray, train: np.ndarray,
                 config: LipsConfig, rng: np.random.Generator) -> np.ndarray:
    """Train each member on the training frames minus its fold; return every training
    frame's out-of-fold prediction (len(train), C), smoothed as at render."""
    n_mel = mel.shape[1]
    video = np.clip(np.round(np.arange(n_mel) * config.fps / MEL_FRAMES_PER_S - 0.5)
                    .astype(int), 0, len(scaled) - 1)  # the video frame of each mel frame
    targets = scaled[video].astype(np.float32)
    oof = np.zeros((len(train), config.n_components), np.float32)
    guard = int(np.ceil(RECEPTIVE_FIELD * config.fps / MEL_FRAMES_PER_S))
    for net, (fit, held) in zip(model.members, _fold_masks(train, config.members, guard),
                                strict=True):
        in_fit = np.zeros(len(scaled), bool)
        in_fit[train[fit]] = True
        _train_member(net, mel, targets, in_fit[video].astype(np.float32), config, rng)
        with torch.no_grad():
            out = net(torch.from_numpy(mel[None]))[0].T.numpy()
        centres = np.clip(frame_centres(len(scaled), config.fps), 0, n_mel - 1)
        pred = out[centres[train[held]]]
        if config.smooth_frames > 0 and len(pred) > 1:
            pred = gaussian_filter1d(pred, config.smooth_frames, axis=0, mode="nearest")
        oof[held] = pred
    return oof


def _report(model: LipsModel, data: PreparedDataset, codes: np.ndarray, train: np.ndarray,
            seconds: float) -> LipsReport:
    a, b = data.split.val
    val = np.arange(a, b)
    predicted = predict_codes(model, ArrayMel(data.mel), b)[val]
    ok = np.isfinite(codes[val, 0])
    real, pred = codes[val][ok], predicted[ok]
    mean = np.broadcast_to(model.pca_mean.numpy(), real.shape)
    return LipsReport(pearson(code_opening(pred), code_opening(real)),
                      float(code_distance(pred, real).mean()),
                      float(code_distance(mean, real).mean()),
                      float(code_opening(pred).std()), float(code_opening(real).std()),
                      len(train), int(ok.sum()), seconds)
