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

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from hygie_w2l.audio import MEL_FRAMES_PER_S, ArrayMel
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import transform_points
from hygie_w2l.library import lip_points, shape_code
from hygie_w2l.lip_shapes import (
    CODE_DIMS,
    CONVOLUTIONS,
    N_LIP_POINTS,
    RECEPTIVE_FIELD,
    LipsConfig,
    LipShapes,
    code_distance,
    code_opening,
    frame_centres,
    layer_widths,
    normalise_mel,
    predict_codes,
)
from hygie_w2l.metrics import pearson


def _member(config: LipsConfig) -> nn.Sequential:
    """lip_shapes.CONVOLUTIONS as torch layers (lip_shapes.LipShapes runs the same): a GELU
    after each but the last, dropout after the first two."""
    widths = layer_widths(config)
    layers: list[nn.Module] = []
    for j, (kernel, dilation) in enumerate(CONVOLUTIONS):
        layers.append(nn.Conv1d(widths[j], widths[j + 1], kernel,
                                padding=(kernel - 1) * dilation // 2, dilation=dilation))
        if j < len(CONVOLUTIONS) - 1:
            layers.append(nn.GELU())
        if j < len(CONVOLUTIONS) - 2:
            layers.append(nn.Dropout(config.dropout))
    return nn.Sequential(*layers)


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

    def shapes(self) -> LipShapes:
        """The same model as numpy arrays, for renders (lip_shapes.py: no torch there)."""
        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        members = tuple(tuple((array(c.weight), array(c.bias)) for c in member.modules()
                              if isinstance(c, nn.Conv1d) and c.bias is not None)
                        for member in self.members)
        return LipShapes(self.config, members, array(self.pca_mean),
                         array(self.pca_components), array(self.target_std), array(self.gain))


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
    predicted = predict_codes(model.shapes(), ArrayMel(data.mel), b)[val]
    ok = np.isfinite(codes[val, 0])
    real, pred = codes[val][ok], predicted[ok]
    mean = np.broadcast_to(model.pca_mean.numpy(), real.shape)
    return LipsReport(pearson(code_opening(pred), code_opening(real)),
                      float(code_distance(pred, real).mean()),
                      float(code_distance(mean, real).mean()),
                      float(code_opening(pred).std()), float(code_opening(real).std()),
                      len(train), int(ok.sum()), seconds)
