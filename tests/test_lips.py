"""The lips path: an audio-to-lips model that follows the audio (and not another one), its
checkpoint, and renders that draw the person's own mouths from their library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hygie_w2l import hd, media
from hygie_w2l.audio import ArrayMel, StreamedMel, melspectrogram
from hygie_w2l.compose import jaw_indices
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.geometry import polygon_mask
from hygie_w2l.library import build_index, lip_points
from hygie_w2l.lip_shapes import (
    LipsConfig,
    code_opening,
    predict_codes,
    read_shapes,
    sidecar_path,
    stream_codes,
)
from hygie_w2l.lips import LipsModel, fit_lips
from hygie_w2l.metrics import pearson
from hygie_w2l.models.checkpoint import load_checkpoint, save_checkpoint
from hygie_w2l.render import RenderConfig, render
from hygie_w2l.template import load_template
from hygie_w2l.types import EngineConfig
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def fitted(long_dataset: Path) -> tuple[LipsModel, object]:
    return fit_lips(PreparedDataset(long_dataset))


@pytest.fixture(scope="module")
def lips_run(fitted, long_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/person/lips/best.pt beside retrieval/person, as finetune.sh lays them out."""
    root = tmp_path_factory.mktemp("lipsrun")
    model, _ = fitted
    (root / "runs" / "person" / "lips").mkdir(parents=True)
    save_checkpoint(root / "runs" / "person" / "lips" / "best.pt", model, "lips")
    build_index([long_dataset], root / "retrieval" / "person")
    return root


def test_the_lips_model_follows_the_true_audio_and_not_a_wrong_one(
        fitted, long_dataset: Path, long_clip) -> None:
    model, report = fitted
    data = PreparedDataset(long_dataset)
    val = np.arange(*data.split.val)
    truth = np.asarray(long_clip[1]["opening"])[val]
    codes = predict_codes(model.shapes(), ArrayMel(data.mel), data.n_frames)
    assert codes.shape == (data.n_frames, 80) and np.isfinite(codes).all()
    r_true = pearson(code_opening(codes[val]), truth)
    wrong = np.roll(data.mel, data.mel.shape[1] // 3, axis=1)  # someone else's words
    r_wrong = pearson(code_opening(predict_codes(model.shapes(), ArrayMel(wrong),
                                                 data.n_frames)[val]), truth)
    assert r_true > 0.9 and abs(r_wrong) < 0.3, (r_true, r_wrong)
    assert report.opening_r > 0.8 and report.lmd < 0.8 * report.lmd_mean_shape, report
    # the shrinkage of the regression is undone: the mouth opens about as wide as the real one
    assert 0.7 < report.opening_std / report.opening_std_real < 1.4, report


def test_the_lips_model_round_trips_through_its_checkpoint(fitted, long_dataset: Path,
                                                            tmp_path: Path) -> None:
    model, _ = fitted
    path = save_checkpoint(tmp_path / "lips.pt", model, "lips")
    loaded = load_checkpoint(path, expect="lips")
    assert loaded.arch == "lips" and loaded.config["members"] == LipsConfig().members
    assert isinstance(loaded.model, LipsModel)
    data = PreparedDataset(long_dataset)
    a = predict_codes(model.shapes(), ArrayMel(data.mel), 60)
    b = predict_codes(loaded.model.shapes(), ArrayMel(data.mel), 60)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_lips_arrays_beside_a_checkpoint_predict_as_its_torch_model(
        fitted, long_dataset: Path, tmp_path: Path) -> None:
    """A lips render reads the arrays saved beside the .pt (no torch): the same predictions
    as the torch model's forward, and refused once the .pt is written again without them."""
    import torch

    model, _ = fitted
    path = save_checkpoint(tmp_path / "best.pt", model, "lips")
    shapes = read_shapes(tmp_path)  # the run folder means its best.pt
    assert shapes is not None and sidecar_path(path) == tmp_path / "best.lips.npz"
    mel = np.random.default_rng(0).normal(size=(80, 400)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(mel[None]))[0].T.numpy()
    np.testing.assert_allclose(shapes.coefficients(mel), expected, atol=1e-5)
    data = PreparedDataset(long_dataset)
    np.testing.assert_allclose(predict_codes(shapes, ArrayMel(data.mel), 60),
                               predict_codes(model.shapes(), ArrayMel(data.mel), 60), atol=1e-6)
    other = LipsModel(model.config)  # another fit written over the .pt, its arrays left stale
    stale = sidecar_path(path).read_bytes()
    save_checkpoint(path, other, "lips")
    sidecar_path(path).write_bytes(stale)
    assert read_shapes(path) is None
    save_checkpoint(path, model, "lips")
    good = sidecar_path(path).read_bytes()
    for damaged in (b"", b"not an npz", good[:len(good) // 2]):  # a copy cut short
        sidecar_path(path).write_bytes(damaged)
        assert read_shapes(path) is None


def test_a_render_reads_the_lips_arrays_or_else_the_checkpoint(fitted, tmp_path: Path) -> None:
    """A run written before the arrays existed (or a .pt copied alone) renders through torch,
    with the same model."""
    from hygie_w2l.generators.lips import LipsGenerator
    from hygie_w2l.render import _arrays_note, _load

    model, _ = fitted
    path = save_checkpoint(tmp_path / "best.pt", model, "lips")
    ckpt, fast = _load(tmp_path)
    assert ckpt is None and isinstance(fast, LipsGenerator) and not _arrays_note(path, ckpt)
    sidecar_path(path).unlink()
    ckpt, slow = _load(path)
    assert ckpt is not None and ckpt.arch == "lips" and isinstance(slow, LipsGenerator)
    assert "--resume" in _arrays_note(path, ckpt)[0]  # the summary says how to add them
    for a, b in zip(fast.shapes.members[0], slow.shapes.members[0], strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(fast.shapes.gain, slow.shapes.gain)


def test_a_lips_render_never_imports_torch(lips_run: Path, synth_clip, tmp_path: Path) -> None:
    """Importing torch costs a lips render's process 1.5-2 s (2-core CPU), and a lips render
    runs no network that needs it."""
    template, _ = synth_clip
    code = ("import sys; from hygie_w2l.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    run = subprocess.run(
        [sys.executable, "-c", code, "render", "--face", str(template), "--audio",
         str(template), "--checkpoint", str(lips_run / "runs" / "person" / "lips"), "--out",
         str(tmp_path / "o.mp4")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYGIE_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[-1] == "torch imported: False"
    assert media.probe(tmp_path / "o.mp4").n_frames > 40


def test_streamed_predictions_equal_one_pass(fitted, long_clip, tmp_path: Path) -> None:
    """An hour of speech is predicted a minute at a time: chunk edges change nothing."""
    from hygie_w2l import lip_shapes

    shapes = fitted[0].shapes()
    wav = media.load_audio(long_clip[0])
    speech = media.AudioFile(long_clip[0], tmp_path)
    n = int(len(wav) * 25 / 16000)
    whole = predict_codes(shapes, ArrayMel(melspectrogram(wav)), n)
    old, lip_shapes.STREAM_CHUNK_FRAMES = lip_shapes.STREAM_CHUNK_FRAMES, 37
    try:
        streamed = np.concatenate([c for _, c in stream_codes(shapes, StreamedMel(speech), n)])
        # as a render asks for them, frame by frame, the first chunk computed by a thread
        codes = hd._Codes(shapes, StreamedMel(speech), n)
        by_frame = np.stack([codes[k] for k in range(n)])
    finally:
        lip_shapes.STREAM_CHUNK_FRAMES = old
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
    np.testing.assert_array_equal(by_frame, streamed)


def test_a_lips_render_lasts_the_audio_and_touches_only_the_lower_face(
        lips_run: Path, long_clip, synth_clip, tmp_path: Path) -> None:
    template, _ = synth_clip
    speech = tmp_path / "speech.wav"  # 3 s of the long clip's words on the short clip's face
    sf.write(speech, media.load_audio(long_clip[0])[16000 * 5:16000 * 8], 16000)
    out = tmp_path / "out.mp4"
    summary = render(template, speech, lips_run / "runs" / "person" / "lips", out,
                     RenderConfig(blend="feather", engine=EngineConfig(device="cpu")),
                     tmp_path / "stats.json")
    info = media.probe(out)
    assert abs(info.duration_s - 3.0) <= 1 / 25 + 0.03 and info.n_frames == summary.n_frames
    assert summary.arch == "lips" and summary.hd is not None
    assert summary.hd["frames"] == summary.generated > 40
    assert media.read_metadata(out)["hygie_synthetic_mouth"] == "1"
    tracked = load_template(template, 25)
    try:
        changed = 0.0
        for k, (a, b) in enumerate(zip(media.read_frames(template), media.read_frames(out),
                                       strict=False)):
            lm = tracked.track.landmarks[k]
            width = float(np.ptp(lip_points(lm)[:20, 0]))
            lower = np.concatenate([lm[jaw_indices(len(lm))], lip_points(lm)])
            lower = lower[lower[:, 1] > lip_points(lm)[:, 1].min() - width]
            region = polygon_mask(lower, a.shape[:2], dilate_px=int(0.6 * width)) > 0
            diff = np.abs(a.astype(int) - b.astype(int)).mean(-1)
            assert diff[~region].mean() < 2.0, k  # only the re-encoding's rounding
            changed = max(changed, float(diff[region].mean()))
        assert changed > 3  # and the mouth did change
    finally:
        tracked.close()


def test_a_second_lips_render_reads_the_templates_features_back(
        lips_run: Path, synth_clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The skin colour under each template frame's mouth is kept with its tracking: the
    second render computes none of it and makes the same video; frames stay I420."""
    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    template, _ = synth_clip
    run = lips_run / "runs" / "person" / "lips"
    config = RenderConfig(engine=EngineConfig(device="cpu"))
    render(template, template, run, tmp_path / "a.mp4", config)
    kept = list((tmp_path / "cache" / "templates").glob("*.lips-context*-i420.npy"))
    assert len(kept) == 1
    contexts, stamp = np.load(kept[0]), kept[0].stat().st_mtime_ns
    assert np.isfinite(contexts).all(axis=1).sum() > 40
    render(template, template, run, tmp_path / "b.mp4", config)
    assert kept[0].stat().st_mtime_ns == stamp  # nothing new to keep
    a, b = (np.stack(list(media.read_frames(tmp_path / f"{n}.mp4"))) for n in "ab")
    assert np.array_equal(a, b)


def test_a_lips_run_without_a_library_says_how_to_build_one(fitted, synth_clip,
                                                            tmp_path: Path) -> None:
    model, _ = fitted
    (tmp_path / "alone").mkdir()
    ckpt = save_checkpoint(tmp_path / "alone" / "lips.pt", model, "lips")
    clip, _ = synth_clip
    run = run_cli("render", "--face", str(clip), "--audio", str(clip), "--checkpoint",
                  str(ckpt), "--out", str(tmp_path / "o.mp4"), cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("hygie-w2l: error")]
    assert len(lines) == 1 and "hygie-w2l index" in lines[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_cli_trains_a_lips_run_in_seconds(long_dataset: Path, tmp_path: Path) -> None:
    run = run_cli("train", str(long_dataset), "--arch", "lips", "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "held-out lip shapes" in run.stdout and "opening r" in run.stdout
    ckpt = load_checkpoint(tmp_path / "r", expect="lips")
    assert ckpt.meta["kind"] == "lips" and ckpt.meta["report"]["opening_r"] > 0.8
    again = run_cli("train", str(long_dataset), "--arch", "lips", "--out", str(tmp_path / "r"))
    assert again.returncode == 2 and "--resume" in again.stderr
    for arrays in (tmp_path / "r").glob("*.lips.npz"):  # a run written before them
        arrays.unlink()
    resumed = run_cli("train", str(long_dataset), "--arch", "lips", "--out",
                      str(tmp_path / "r"), "--resume")
    assert resumed.returncode == 0 and "best.lips.npz" in resumed.stdout, resumed.stderr
    assert read_shapes(tmp_path / "r") is not None and read_shapes(tmp_path / "r" / "last.pt")
