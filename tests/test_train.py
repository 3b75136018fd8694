"""Fine-tuning on the synthetic fixture (CPU): the expert beats chance, the FiLM U-Net learns
the held-out mouth from the audio, a run resumes exactly, Wav2Lip fine-tunes from
official-layout weights, and bad inputs give clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.errors import OutputError
from hygie_w2l.evaluate import held_out_openings
from hygie_w2l.metrics import pearson
from hygie_w2l.models.checkpoint import build_model, load_checkpoint, save_official_layout
from hygie_w2l.runs import StepBoundary, resolve_config
from hygie_w2l.train import train_generator
from hygie_w2l.train_sync import train_sync
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def dataset(long_dataset: Path) -> Path:
    return long_dataset


def _config(kind: str, **overrides):  # type: ignore[no-untyped-def]
    return resolve_config(kind, "quick", {"device": "cpu", **overrides})


def test_the_expert_beats_chance_on_held_out_frames(dataset: Path, tmp_path: Path) -> None:
    config = _config("expert", arch="syncnet_color", steps=100, batch_size=8, lr=1e-3,
                     eval_every=25, checkpoint_every=100, eval_batches=16, init="scratch")
    summary = train_sync(dataset, tmp_path / "expert", config)
    assert "from scratch" in summary.init
    # 128 held-out pairs, half in sync: chance is 0.5 (p < 0.01 for >= 0.61)
    assert summary.best_val_accuracy >= 0.61, summary
    ckpt = load_checkpoint(tmp_path / "expert", expect="syncnet_color")
    assert ckpt.meta["kind"] == "expert"


def test_film_unet_learns_the_held_out_mouth_from_audio(long_clip, dataset: Path,
                                                         tmp_path: Path) -> None:
    """Held-out speech drawn on one still training frame (nothing of the real mouth is
    visible to the network or to the measurement): the mouth follows the true audio, and
    not a wrong one."""
    video, truth = long_clip
    config = _config("generator", arch="film_unet", steps=400, eval_every=400,
                     checkpoint_every=400, preview_every=400, init="scratch")
    summary = train_generator(dataset, tmp_path / "run", config)
    log = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    first_train = dict(zip(log[0], log[1], strict=True))
    assert summary.best_val < 0.7 * float(first_train["mouth_l1"]), summary
    assert (tmp_path / "run" / "previews" / "step_0000400.png").exists()
    data = PreparedDataset(dataset)
    frames = list(range(*data.split.val))
    model = load_checkpoint(tmp_path / "run")
    opening = np.asarray(truth["opening"])[frames]
    generated, _ = held_out_openings(model, data, video, frames)
    assert (~np.isnan(generated)).mean() > 0.95
    data.mel = np.roll(data.mel, data.mel.shape[1] // 3, axis=1)  # someone else's words
    wrong, _ = held_out_openings(model, data, video, frames)
    r_true, r_wrong = pearson(generated, opening), pearson(wrong, opening)
    assert r_true > 0.5 and r_true > r_wrong + 0.25, (r_true, r_wrong)


def test_resume_continues_exactly(dataset: Path, tmp_path: Path) -> None:
    cfg = dict(arch="film_unet", eval_every=4, checkpoint_every=4, preview_every=100,
               init="scratch", batch_size=2, eval_batches=1)
    train_generator(dataset, tmp_path / "straight", _config("generator", steps=8, **cfg))
    train_generator(dataset, tmp_path / "cut", _config("generator", steps=4, **cfg))
    train_generator(dataset, tmp_path / "cut", _config("generator", steps=8, **cfg), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a.step == b.step == 8
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                           strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_a_killed_run_resumes_from_its_last_checkpoint(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "hygie_w2l.cli", "train", str(dataset), "--out", str(run),
            "--arch", "film-unet", "--steps", "400", "--checkpoint-every", "5",
            "--eval-every", "1000", "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
    saved = load_checkpoint(run / "last.pt").step
    assert 5 <= saved < 400
    resumed = run_cli("train", str(dataset), "--out", str(run), "--arch", "film-unet",
                      "--steps", str(saved + 3), "--batch-size", "2", "--device", "cpu",
                      "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {saved}" in resumed.stdout
    assert load_checkpoint(run / "last.pt").step == saved + 3
    # the log holds each step once: the steps after the checkpoint were rolled back
    rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]
    train_steps = [int(r[0]) for r in rows if r[1] == "train"]
    assert train_steps == list(range(1, saved + 4)), train_steps


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def test_a_stop_signal_waits_for_the_end_of_the_step() -> None:
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with StepBoundary() as stop:  # one signal: recorded, raised at the step's end
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and raised nothing
            with pytest.raises(_Stop):
                stop.check()
            assert stop.clean
            stop.check()  # raised once only
        with StepBoundary() as stop, pytest.raises(_Stop):  # asked twice: stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert not stop.clean
        assert signal.getsignal(signal.SIGTERM) is _raise_stop  # put back on leaving
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_wav2lip_fine_tunes_from_official_layout_weights(dataset: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    gen = save_official_layout(tmp_path / "wav2lip.pth", build_model("wav2lip"))
    expert = save_official_layout(tmp_path / "lipsync_expert.pth", build_model("syncnet_color"))
    config = _config("generator", arch="wav2lip", init=str(gen), expert=str(expert), gan=True,
                     steps=1, batch_size=2, eval_every=1, checkpoint_every=1, eval_batches=1,
                     preview_every=1)
    summary = train_generator(dataset, tmp_path / "run", config)
    assert summary.steps == 1 and any("sync loss from" in n for n in summary.notes)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt", expect="wav2lip")
    assert ckpt.meta["kind"] == "generator" and "disc" in ckpt.extra
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"sync", "gen_adv", "disc"} <= set(header)


def test_bad_inputs_are_clear_errors(dataset: Path, tmp_path: Path) -> None:
    run = run_cli("train", str(tmp_path), "--out", str(tmp_path / "r"))
    assert run.returncode == 2 and "not a prepared dataset" in run.stderr
    old = tmp_path / "old"
    old.mkdir()
    for f in dataset.iterdir():
        (old / f.name).symlink_to(f)
    (old / "meta.json").unlink()
    meta = json.loads((dataset / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "format_version": 0}))
    run = run_cli("train", str(old), "--out", str(tmp_path / "r"))
    assert run.returncode == 2 and "dataset format 0" in run.stderr
    disc = save_official_layout(tmp_path / "disc.pth", build_model("disc_qual"))
    run = run_cli("train", str(dataset), "--out", str(tmp_path / "r2"), "--arch", "wav2lip",
                  "--init", str(disc))
    assert run.returncode == 2 and "disc_qual checkpoint, but wav2lip" in run.stderr


def test_a_full_disk_while_saving_corrupts_nothing(dataset: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dict(arch="film_unet", eval_every=2, checkpoint_every=2, init="scratch",
               batch_size=2, eval_batches=1, preview_every=100)
    run = tmp_path / "run"
    train_generator(dataset, run, _config("generator", steps=2, **cfg))
    before = (run / "last.pt").read_bytes()

    def full_disk(obj, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match="disk is full"):
        train_generator(dataset, run, _config("generator", steps=4, **cfg), resume=True)
    assert (run / "last.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_ddp_with_two_cpu_processes(dataset: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29541", "-m",
         "hygie_w2l.cli", "train", str(dataset), "--out", str(run), "--arch", "film-unet",
         "--steps", "4", "--batch-size", "2", "--eval-every", "2", "--checkpoint-every", "2",
         "--device", "cpu"], capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("best checkpoint") == 1  # rank 0 reports, rank 1 does not
    assert load_checkpoint(run / "last.pt").step == 4
    rows = (run / "log.csv").read_text().splitlines()
    assert sum(",train," in r for r in rows) == 4  # one log, not one per process


def test_finetune_script_names_the_failing_step(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(repo / "scripts" / "finetune.sh"),
                           str(tmp_path / "missing.mp4"), "x"], capture_output=True,
                          text=True, env={**os.environ,
                                          "HYGIE_BIN": str(Path(sys.executable).with_name(
                                              "hygie-w2l"))}, timeout=120)
    assert proc.returncode == 2
    assert "step 'prepare' failed" in proc.stderr and "missing.mp4: file not found" in \
        proc.stderr
