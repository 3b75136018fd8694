"""The scores of lip-sync and image quality, on plain arrays (evaluate.py feeds them), and
the reference frame every evaluation draws on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hygie_w2l.dataset import PreparedDataset


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over the frames where both are measured (NaN-safe)."""
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def reference_frame(data: PreparedDataset) -> int:
    """The training-split frame whose mouth is the most closed (a neutral template)."""
    a, b = data.split.train
    return a + int(np.argmin(np.asarray(data.array("mouth_mask").take(range(a, b)))
                             .reshape(b - a, -1).mean(1)))


# ------------------------------------------------- scores on frame sequences ----
# Each takes plain arrays so it can be tested on constructed cases; evaluate.py feeds them.

def lip_landmark_distance(pred: np.ndarray, real: np.ndarray, widths: np.ndarray) -> float:
    """LMD: mean over frames of the mean Euclidean distance between corresponding lip
    landmarks (T, K, 2) of generated and real frames, each frame divided by the real mouth
    width (so 0.01 = 1 % of the mouth width). Frames with NaN landmarks are skipped."""
    d = np.linalg.norm(pred - real, axis=-1).mean(-1) / np.maximum(widths, 1e-6)
    d = d[~np.isnan(d)]
    return float(d.mean()) if len(d) else float("nan")


MAX_OFFSET_FRAMES = 5  # sync offsets searched: +-0.2 s at 25 fps


def best_offset(generated: np.ndarray, real: np.ndarray, max_lag: int = MAX_OFFSET_FRAMES
                ) -> tuple[int, float]:
    """The lag k (frames) maximising corr(generated[t], real[t - k]): positive k means the
    generated mouth is late by k frames. Returns (k, correlation at k)."""
    best = (0, -np.inf)
    n = len(real)
    for k in range(-max_lag, max_lag + 1):
        a = generated[max(k, 0):n + min(k, 0)]
        b = real[max(-k, 0):n - max(k, 0)]
        r = pearson(a, b)
        if not np.isnan(r) and r > best[1]:
            best = (k, r)
    return best[0], float(best[1]) if np.isfinite(best[1]) else float("nan")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two uint8 BGR images, on grey levels."""
    import cv2
    from skimage.metrics import structural_similarity

    ga, gb = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) if x.ndim == 3 else x for x in (a, b))
    win = min(7, *ga.shape) // 2 * 2 + 1
    return float(structural_similarity(ga, gb, data_range=255, win_size=max(win, 3)))


def laplacian_energy(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(sum of squared Laplacian response weighted by ``mask``, sum of the mask): pooled
    over frames and divided, it gives the sharpness (variance of the Laplacian) of a region."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=3)
    return float((lap.astype(np.float64) ** 2 * mask).sum()), float(mask.sum())


def sharpness(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Mean squared Laplacian inside the masks, pooled over all frames (higher = sharper)."""
    num = den = 0.0
    for image, mask in zip(images, masks, strict=True):
        e, m = laplacian_energy(image, mask)
        num, den = num + e, den + m
    return num / den if den > 0 else float("nan")


def region_change(prev: np.ndarray, cur: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(sum of |grey difference| weighted by ``mask``, sum of the mask) of two frames."""
    import cv2

    a, b = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) for x in (prev, cur))
    return float((np.abs(b - a) * mask).sum()), float(mask.sum())


def flicker(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Temporal flicker: mean absolute grey change between consecutive frames inside the
    mask of the later frame, pooled (grey levels per pixel per frame)."""
    num = den = 0.0
    for t in range(1, len(frames)):
        e, m = region_change(frames[t - 1], frames[t], masks[t])
        num, den = num + e, den + m
    return num / den if den > 0 else float("nan")
