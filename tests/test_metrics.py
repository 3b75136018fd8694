"""Scores of `eval` on constructed cases: identical frames give the ceiling, a mouth late by
k frames gives offset k, a blurred mouth is less sharp, and the LSE front-end and arithmetic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hygie_w2l.lse import mfcc, sync_scores
from hygie_w2l.metrics import (
    best_offset,
    flicker,
    lip_landmark_distance,
    psnr,
    sharpness,
    ssim,
)


def _texture(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 4, size // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def test_identical_frames_give_the_ceiling() -> None:
    img = _texture()
    assert psnr(img, img) == float("inf") and ssim(img, img) == pytest.approx(1.0)
    pts = np.random.default_rng(1).random((10, 40, 2)) * 100
    assert lip_landmark_distance(pts, pts, np.full(10, 50.0)) == 0.0
    mask = np.ones(img.shape[:2], np.float32)
    frames = [_texture(s) for s in range(5)]
    assert flicker(frames, [mask] * 5) > 10  # changing frames do flicker
    assert flicker([img] * 5, [mask] * 5) == 0.0


def test_lmd_is_relative_to_mouth_width_and_skips_missing_frames() -> None:
    real = np.zeros((3, 40, 2))
    pred = real + [3.0, 4.0]  # 5 px off everywhere
    assert lip_landmark_distance(pred, real, np.array([50.0, 100.0, 50.0])) == pytest.approx(
        (0.1 + 0.05 + 0.1) / 3)
    pred[1] = np.nan
    assert lip_landmark_distance(pred, real, np.full(3, 50.0)) == pytest.approx(0.1)


@pytest.mark.parametrize("k", [-3, 0, 2, 4])
def test_a_mouth_shifted_by_k_frames_gives_offset_k(k: int) -> None:
    rng = np.random.default_rng(5)
    real = np.convolve(rng.random(120), np.ones(3) / 3, mode="same")
    generated = np.roll(real, k)  # generated[t] = real[t - k]: late by k frames
    offset, r = best_offset(generated, real, max_lag=6)
    assert offset == k and r > 0.99


def test_a_blurred_mouth_is_less_sharp_and_psnr_orders_damage() -> None:
    img = _texture(2, 96)
    mask = np.ones(img.shape[:2], np.float32)
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0)
    assert sharpness([blurred], [mask]) < 0.5 * sharpness([img], [mask])
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 20, img.shape), 0, 255).astype(
        np.uint8)
    slightly = np.clip(img + np.random.default_rng(0).normal(0, 5, img.shape), 0, 255).astype(
        np.uint8)
    assert psnr(slightly, img) > psnr(noisy, img) and ssim(slightly, img) > ssim(noisy, img)


def test_lse_arithmetic_on_constructed_embeddings() -> None:
    rng = np.random.default_rng(0)
    n, d, shift = 60, 32, 3
    video = rng.standard_normal((n, d)).astype(np.float32)
    # the audio embedding of window t + shift matches the video of window t: offset = -shift
    # in the tool's convention (audio leads), distance ~ 0 there
    audio = np.roll(video, shift, axis=0)
    s = sync_scores(video, audio, v_shift=15)
    assert s.offset == -shift
    assert s.distance < 0.25 * np.median(s.mean_distances)
    assert s.confidence == pytest.approx(np.median(s.mean_distances) - s.distance, rel=1e-5)
    s0 = sync_scores(video, video)
    assert s0.offset == 0 and s0.distance == pytest.approx(0.0, abs=1e-3)
    noise = sync_scores(video, rng.standard_normal((n, d)).astype(np.float32))
    assert noise.confidence < 0.3 * s0.confidence


def test_mfcc_front_end_matches_python_speech_features() -> None:
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    for n in (16000, 16003, 7000):
        x = (rng.standard_normal(n) * 3000).astype(np.int16)
        ref = psf.mfcc(x, 16000)
        ours = mfcc(x.astype(np.float64))
        assert ours.shape == ref.shape == (1 + int(np.ceil((n - 400) / 160)), 13)
        assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_syncnet_v2_pipeline_runs_on_224px_windows() -> None:
    import torch

    from hygie_w2l.lse import syncnet_v2_scores
    from hygie_w2l.models.checkpoint import build_model

    torch.manual_seed(0)
    model = build_model("syncnet_v2")
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (12, 224, 224, 3), dtype=np.uint8)
    wav = rng.standard_normal(int(16000 * 12 / 25)).astype(np.float32) * 0.1
    s = syncnet_v2_scores(model, faces, wav)
    assert len(s.mean_distances) == 31 and -15 <= s.offset <= 15
    assert np.isfinite(s.distance) and s.confidence >= 0
