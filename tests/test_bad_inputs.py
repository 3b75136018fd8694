"""Bad input never gets a traceback, a hang or a lost file.

One table: each row makes a bad input (or a documented success) and runs a real command on
it. For every row: the exit code (2 for a user error), one error line on stderr that names
the file and says what to do, no "Traceback", nothing left behind by the failed command,
no existing file changed (SHA-256 before and after), within a time limit. The README's
troubleshooting section lists the rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from hygie_w2l import media
from hygie_w2l.fixtures import FixtureConfig, write_fixture
from hygie_w2l.models.checkpoint import build_model, save_checkpoint, save_official_layout
from tests.conftest import make_variant

ROW_TIMEOUT_S = 180


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    args: list[str]  # {name} placeholders: files of the world below
    says: tuple[str, ...]  # what the error line must contain (the file, the fix)
    code: int = 2
    make: Callable[[Path], None] | None = None  # builds the bad input in the world
    leaves: tuple[str, ...] = ()  # paths a success may add (a documented success)
    root_only: bool = False  # needs chattr +i (root)


# ------------------------------------------------------------------- the world ----

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, synth_dataset: Path) -> Path:
    """A folder holding a small dataset `ds`, a 3-step FiLM U-Net run `run`, a lips run and
    a mouth library (`runs/person/lips`, `retrieval/person`), a 2 s clip `face2s.mp4` and
    `good2s.wav`, and a few bad files."""
    w = tmp_path_factory.mktemp("bad")
    write_fixture(w / "face2s.mp4", FixtureConfig(seconds=2.0, seed=5))
    write_fixture(w / "face4s.mp4", FixtureConfig(seconds=4.0, seed=6))  # long enough to prepare
    sf.write(w / "good2s.wav", media.load_audio(w / "face2s.mp4"), 16000)
    shutil.copytree(synth_dataset, w / "ds")
    torch.manual_seed(0)
    film = build_model("film_unet", {"size_px": 96, "channels": (8, 16, 32, 64, 128)})
    (w / "run").mkdir()
    save_checkpoint(w / "run" / "best.pt", film, "film_unet")
    save_official_layout(w / "expert.pth", build_model("syncnet_color"))
    (w / "notes.txt").write_text("my notes about the run\n")
    _cli(w, "index", "ds", "--out", "retrieval/person")
    (w / "runs" / "person").mkdir(parents=True)
    _cli(w, "train", "ds", "--arch", "lips", "--steps", "30", "--out", "runs/person/lips")
    make_variant(w / "face2s.mp4", w / "faceless.mp4", lambda f, i: np.full_like(f, 90))
    make_variant(w / "face4s.mp4", w / "faceless4s.mp4", lambda f, i: np.full_like(f, 90))
    media.run_ffmpeg(["-v", "error", "-i", str(w / "face2s.mp4"), "-an", "-c", "copy", "-y",
                      str(w / "silent_video.mp4")], "video only")
    return w


def _cli(cwd: Path, *args: str, timeout: float = ROW_TIMEOUT_S) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "hygie_w2l.cli", *args], capture_output=True,
                         text=True, cwd=cwd, timeout=timeout)
    assert run.returncode == 0 or "error" in run.stderr, run.stderr[-2000:]
    return run


# ------------------------------------------------------------ bad inputs made ----

def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return make


def _truncated_faststart(w: Path) -> None:
    media.run_ffmpeg(["-v", "error", "-i", str(w / "face2s.mp4"), "-c", "copy", "-movflags",
                      "+faststart", "-y", str(w / "fs.mp4")], "faststart")
    data = (w / "fs.mp4").read_bytes()
    (w / "cut.mp4").write_bytes(data[:int(len(data) * 0.3)])
    (w / "fs.mp4").unlink()


def _empty_wav(w: Path) -> None:
    sf.write(w / "empty.wav", np.zeros(0, np.float32), 16000)


_text_video = _write("text.mp4", "hello, I am not a video\n" * 20)


def _empty_wav_and_text_video(w: Path) -> None:
    _empty_wav(w)
    _text_video(w)


def _pickle_with_code(w: Path) -> None:
    torch.save({"state_dict": {}, "x": _Payload()}, w / "evil.pth")


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def _truncated_checkpoint(w: Path) -> None:
    data = (w / "run" / "best.pt").read_bytes()
    (w / "cut.pt").write_bytes(data[: len(data) // 3])


def _dataset_with_meta(text: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        shutil.copytree(w / "ds", w / "bad_ds")
        (w / "bad_ds" / "meta.json").write_text(text)
    return make


def _library_with_meta(text: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        shutil.copytree(w / "retrieval" / "person", w / "bad_lib")
        (w / "bad_lib" / "meta.json").write_text(text)
    return make


def _hardlink(src: str, dst: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        os.link(w / src, w / dst)
    return make


def _immutable_folder(w: Path) -> None:
    (w / "locked").mkdir()
    if subprocess.run(["chattr", "+i", str(w / "locked")], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (not root, or no ext4/xfs)")


def _short_clip(w: Path) -> None:
    write_fixture(w / "short.mp4", FixtureConfig(seconds=1.0, seed=2))


def _two_runs(w: Path) -> None:
    shutil.copytree(w / "run", w / "done_run")
    (w / "done_run" / "last.pt").write_bytes((w / "run" / "best.pt").read_bytes())


def _combined(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        for m in makers:
            m(w)
    return make


R = ["render", "--face", "face2s.mp4", "--audio", "good2s.wav", "--checkpoint", "run",
     "--device", "cpu"]


def _render(out: str = "out.mp4", **swap: str) -> list[str]:
    """render's argument list with some values replaced: face=..., audio=..., checkpoint=..."""
    args = list(R)
    for flag, value in swap.items():
        args[args.index(f"--{flag}") + 1] = value
    return [*args, "--out", out]


ROWS = [
    # render: the template
    Row("render: missing template", _render(face="nope.mp4"), ("nope.mp4", "not found")),
    Row("render: empty template", _render(face="empty.mp4"), ("empty.mp4", "empty"),
        make=_write("empty.mp4", b"")),
    Row("render: template is a folder", _render(face="ds"), ("ds", "not a file")),
    Row("render: text named .mp4", _render(face="text.mp4"), ("text.mp4", "not a readable"),
        make=_text_video),
    Row("render: no face in the template", _render(face="faceless.mp4"),
        ("faceless.mp4", "no face")),
    Row("render: truncated template (faststart, 30 %)", _render(face="cut.mp4"),
        ("cut.mp4", "truncated"), code=0, make=_truncated_faststart, leaves=("out.mp4",)),
    Row("render: unicode names", _render(face="visage é 顔.mp4", out="sortie é.mp4"),
        (), code=0, make=_hardlink("face2s.mp4", "visage é 顔.mp4"), leaves=("sortie é.mp4",)),
    # render: the speech
    Row("render: missing speech", _render(audio="nope.wav"), ("nope.wav", "not found")),
    Row("render: speech without an audio stream", _render(audio="silent_video.mp4"),
        ("silent_video.mp4", "no audio stream")),
    Row("render: corrupt wav", _render(audio="garbage.wav"), ("garbage.wav",),
        make=_write("garbage.wav", b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)),
    Row("render: speech with no samples", _render(audio="empty.wav"),
        ("empty.wav", "no samples"), make=_empty_wav),
    # the speech is decoded while the template is probed: its error still comes first
    Row("render: speech without samples and a text template",
        _render(face="text.mp4", audio="empty.wav"), ("empty.wav", "no samples"),
        make=_empty_wav_and_text_video),
    # render: the checkpoint
    Row("render: missing checkpoint", _render(checkpoint="nope.pt"), ("nope.pt", "not found")),
    # the ONNX engine looks for the checkpoint's cached export first: none for a missing file
    Row("render: missing checkpoint, ONNX engine",
        [*_render(checkpoint="nope.pt"), "--engine", "onnx"], ("nope.pt", "not found")),
    Row("render: text file as checkpoint", _render(checkpoint="notes.txt"),
        ("notes.txt", "not a PyTorch checkpoint")),
    Row("render: pickle with code", _render(checkpoint="evil.pth"),
        ("evil.pth", "needs code"), make=_pickle_with_code),
    Row("render: the expert as generator", _render(checkpoint="expert.pth"),
        ("expert.pth", "syncnet_color checkpoint")),
    Row("render: truncated checkpoint", _render(checkpoint="cut.pt"),
        ("cut.pt", "truncated or corrupt"), make=_truncated_checkpoint),
    Row("render: lips run without a library", _render(checkpoint="runs/person/lips"),
        ("runs/person/lips", "hygie-w2l index"),
        make=lambda w: shutil.rmtree(w / "retrieval")),
    # render: the output
    Row("render: output folder missing", _render(out="no/such/out.mp4"),
        ("no/such/out.mp4", "does not exist")),
    Row("render: output is a folder", _render(out="ds"), ("ds", "is a folder")),
    Row("render: read-only output", _render(out="ro.mp4"), ("ro.mp4", "read-only"),
        make=lambda w: (_write("ro.mp4", b"x")(w), (w / "ro.mp4").chmod(0o444))),
    Row("render: output is the template (another name)", _render(out="alias.mp4"),
        ("alias.mp4", "also an input"), make=_hardlink("face2s.mp4", "alias.mp4")),
    Row("render: output is the speech", _render(audio="speech.wav", out="speech.wav"),
        ("speech.wav", "also an input"), make=_hardlink("good2s.wav", "speech.wav")),
    # render: flags
    Row("render: --batch-size -3", [*_render(), "--batch-size", "-3"],
        ("--batch-size", "-3", "whole number")),
    Row("render: --crf 99", [*_render(), "--crf", "99"], ("--crf", "99")),
    Row("render: --hd-strength 2", [*_render(), "--hd-retrieval", "--hd-strength", "2"],
        ("--hd-strength", "0, 1")),
    Row("render: --start -1", [*_render(), "--start", "-1"], ("--start", "-1")),
    Row("render: --index is not a library", [*_render(), "--hd-retrieval", "--index", "run"],
        ("run", "not a mouth library", "hygie-w2l index")),
    Row("render: library meta.json not JSON", [*_render(), "--hd-retrieval", "--index",
                                               "bad_lib"],
        ("bad_lib/meta.json", "not readable JSON", "hygie-w2l index"),
        make=_library_with_meta("{ not json")),
    Row("render: library meta.json a list", [*_render(), "--hd-retrieval", "--index",
                                             "bad_lib"],
        ("bad_lib/meta.json", "not an object"), make=_library_with_meta("[1, 2, 3]")),
    Row("render: --index without --hd-retrieval", [*_render(), "--index", "retrieval/person"],
        ("--hd-retrieval",)),
    Row("render: unknown flag", [*_render(), "--speed", "fast"], ("--speed",)),
    Row("render: a path that begins with '-'", ["render", "--face", "-face.mp4", "--audio",
                                                "good2s.wav", "--checkpoint", "run", "--out",
                                                "o.mp4"], ("-face.mp4", "./")),
    # prepare
    Row("prepare: no face, over a good dataset", ["prepare", "faceless4s.mp4", "--out", "ds"],
        ("faceless4s.mp4", "no face")),
    Row("prepare: no audio stream", ["prepare", "silent_video.mp4", "--out", "new_ds"],
        ("silent_video.mp4", "--audio")),
    Row("prepare: empty speech", ["prepare", "face4s.mp4", "--audio", "empty.wav", "--out",
                                  "new_ds"], ("empty.wav", "no samples"), make=_empty_wav),
    Row("prepare: --out is a file", ["prepare", "face2s.mp4", "--out", "notes.txt"],
        ("notes.txt", "is a file")),
    Row("prepare: --out is the video", ["prepare", "face2s.mp4", "--out", "face2s.mp4"],
        ("face2s.mp4",)),
    Row("prepare: --out holds something else", ["prepare", "face2s.mp4", "--out", "run"],
        ("run", "not a hygie-w2l dataset")),
    Row("prepare: dataset meta.json not JSON", ["prepare", "face2s.mp4", "--out", "bad_ds"],
        ("bad_ds/meta.json", "not readable JSON", "rm -r"), make=_dataset_with_meta("{{")),
    Row("prepare: dataset meta.json a list", ["prepare", "face2s.mp4", "--out", "bad_ds"],
        ("bad_ds/meta.json", "not an object"), make=_dataset_with_meta("[1, 2, 3]")),
    Row("prepare: --val-fraction 1.5", ["prepare", "face2s.mp4", "--out", "new_ds",
                                        "--val-fraction", "1.5"], ("--val-fraction", "(0, 0.5]")),
    Row("prepare: --val-fraction 0", ["prepare", "face2s.mp4", "--out", "new_ds",
                                      "--val-fraction", "0"], ("--val-fraction", "(0, 0.5]")),
    Row("prepare: --val-fraction -0.5", ["prepare", "face2s.mp4", "--out", "new_ds",
                                         "--val-fraction", "-0.5"], ("--val-fraction",)),
    Row("prepare: too short", ["prepare", "short.mp4", "--out", "new_ds"],
        ("short.mp4", "too few"), make=_short_clip),
    Row("prepare: truncated video", ["prepare", "cut.mp4", "--out", "new_ds"],
        ("cut.mp4", "truncated", "Re-export"), make=_truncated_faststart),
    Row("prepare: folder that cannot be written", ["prepare", "face4s.mp4", "--out",
                                                   "locked/ds"],
        ("locked", "cannot write"), make=_immutable_folder, root_only=True),
    # train
    Row("train: missing dataset", ["train", "nope", "--out", "r"], ("nope", "not a prepared")),
    Row("train: dataset meta.json not JSON", ["train", "bad_ds", "--out", "r"],
        ("bad_ds/meta.json", "not readable JSON", "prepare"), make=_dataset_with_meta("{")),
    Row("train: dataset meta.json a list", ["train", "bad_ds", "--out", "r"],
        ("bad_ds/meta.json", "not an object"), make=_dataset_with_meta("[1,2,3]")),
    Row("train: --batch-size 0", ["train", "ds", "--out", "r", "--batch-size", "0"],
        ("--batch-size", "whole number >= 1")),
    Row("train: --batch-size -1", ["train", "ds", "--out", "r", "--batch-size", "-1"],
        ("--batch-size",)),
    Row("train: --lr -1", ["train", "ds", "--out", "r", "--lr", "-1"], ("--lr", "(0, inf)")),
    Row("train: --steps 0", ["train", "ds", "--out", "r", "--steps", "0"], ("--steps",)),
    Row("train: --steps -5", ["train", "ds", "--out", "r", "--steps", "-5"], ("--steps",)),
    Row("train: --out holds a run", ["train", "ds", "--arch", "film-unet", "--out",
                                     "done_run"], ("done_run", "--resume"), make=_two_runs),
    Row("train: --resume with nothing to resume", ["train", "ds", "--arch", "film-unet",
                                                   "--out", "r", "--resume"],
        ("r", "nothing to resume")),
    Row("train: --out is the dataset", ["train", "ds", "--out", "ds"], ("ds", "also an input")),
    Row("train: folder that cannot be written", ["train", "ds", "--out", "locked/r"],
        ("locked", "cannot write"), make=_immutable_folder, root_only=True),
    Row("train-sync: --lr 0", ["train-sync", "ds", "--out", "r", "--lr", "0"], ("--lr",)),
    # index, eval
    Row("index: missing dataset", ["index", "nope", "--out", "lib"], ("nope", "not a prepared")),
    Row("index: --out is the dataset", ["index", "ds", "--out", "ds"], ("ds", "also an input")),
    Row("index: dataset meta.json not JSON", ["index", "bad_ds", "--out", "lib"],
        ("bad_ds/meta.json", "not readable JSON"), make=_dataset_with_meta("nope")),
    Row("index: folder that cannot be written", ["index", "ds", "--out", "locked/lib"],
        ("locked", "cannot write"), make=_immutable_folder, root_only=True),
    Row("eval: dataset meta.json a list", ["eval", "bad_ds", "--checkpoint", "run", "--out",
                                           "report"], ("bad_ds/meta.json", "not an object"),
        make=_dataset_with_meta("[]")),
    Row("eval: text file as checkpoint", ["eval", "ds", "--checkpoint", "notes.txt", "--out",
                                          "report"], ("notes.txt", "not a PyTorch")),
    Row("eval: --max-frames 0", ["eval", "ds", "--checkpoint", "run", "--out", "report",
                                 "--max-frames", "0"], ("--max-frames",)),
    # the small commands
    Row("info: missing file", ["info", "nope.mp4"], ("nope.mp4", "not found")),
    Row("info: text as video", ["info", "text.mp4"], ("text.mp4", "not a readable"),
        make=_write("text.mp4", "plain text\n" * 50)),
    Row("probe: no face", ["probe", "faceless.mp4", "--out", "p.png"], (), code=0,
        leaves=("p.png",)),
    Row("synth: --seconds 0", ["synth", "--out", "s.mp4", "--seconds", "0"], ("--seconds",)),
    Row("export-onnx: the lips model", ["export-onnx", "--checkpoint",
                                        "runs/person/lips/best.pt", "--out", "l.onnx"],
        ("lips", "no network to export")),
]


def _snapshot(w: Path) -> dict[str, str]:
    """SHA-256 of every file below ``w`` (folders as entries too)."""
    out = {}
    for path in sorted(w.rglob("*")):
        rel = str(path.relative_to(w))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def test_the_table_has_enough_rows() -> None:
    assert len(ROWS) >= 45 and len({r.name for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input(row: Row, world: Path, tmp_path: Path) -> None:
    if row.root_only and os.geteuid() != 0:
        pytest.skip("chattr +i needs root")
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    try:
        if row.make is not None:
            row.make(w)
        before = _snapshot(w)
        started = time.monotonic()
        run = _cli(w, *row.args, timeout=ROW_TIMEOUT_S)
        assert time.monotonic() - started < ROW_TIMEOUT_S
        assert run.returncode == row.code, (run.returncode, run.stderr[-1500:])
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        if row.code == 2:
            lines = [line for line in run.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, run.stderr  # one line, whatever the libraries say
            for word in row.says:
                assert word in lines[0], (word, lines[0])
            if os.environ.get("HYGIE_BAD_INPUTS_TABLE"):  # the README's troubleshooting rows
                with open(os.environ["HYGIE_BAD_INPUTS_TABLE"], "a") as table:
                    table.write(f"{row.name}\t{lines[0]}\n")
        else:
            for word in row.says:
                assert word in run.stderr + run.stdout, (word, run.stderr)
        after = _snapshot(w)
        added = {p for p in after if p not in before}
        assert not {p for p in added if not any(p.startswith(x) for x in row.leaves)}, added
        changed = {p for p in before if p in after and before[p] != after[p]}
        assert not changed, changed
        assert not [p for p in before if p not in after], "an existing file was removed"
    finally:
        subprocess.run(["chattr", "-i", str(w / "locked")], capture_output=True)


def test_sigterm_stops_a_render_and_removes_its_temporary_files(world: Path,
                                                                 tmp_path: Path) -> None:
    """An hour of speech, stopped by `kill` after a few seconds: exit 143, and no
    hygie-render-* folder, raw audio or partial video is left beside the output."""
    hour = tmp_path / "hour.wav"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "anoisesrc=d=3600:r=16000:a=0.1", "-c:a", "pcm_s16le", str(hour)], check=True)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "hygie_w2l.cli", *_render(
        out=str(out_dir / "o.mp4"), audio=str(hour))], cwd=world, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    def writing() -> bool:  # the encoder's output under its temporary name, growing
        return any(p.stat().st_size > 0 for p in out_dir.glob(".o.*.tmp.mp4"))

    deadline = time.monotonic() + 120
    while not writing() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert writing() and list(out_dir.glob("hygie-render-*")), "the render never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "stopped (SIGTERM)" in err
    assert list(out_dir.iterdir()) == [], list(out_dir.iterdir())


def test_an_interrupted_prepare_is_kept_and_resumed(world: Path, tmp_path: Path) -> None:
    """Interrupted, prepare keeps its work in OUT.partial and says so; the same command
    resumes it; an existing dataset is replaced only when the new one is complete."""
    long = tmp_path / "long.mp4"
    write_fixture(long, FixtureConfig(seconds=30.0, seed=4))
    args = [sys.executable, "-m", "hygie_w2l.cli", "prepare", str(long), "--out",
            str(tmp_path / "ds")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "ds.partial"
    deadline = time.monotonic() + 120
    while not (partial / "mel.npy").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err and partial.is_dir(), err[-2000:]
    assert not (tmp_path / "ds").exists()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resuming an interrupted prepare" in done.stdout, done.stderr
    assert (tmp_path / "ds" / "meta.json").is_file() and not partial.exists()


def _two_faces(frame: np.ndarray, _i: int) -> np.ndarray:
    """The person on the left and a smaller copy on the right (two faces side by side)."""
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA)
    right = np.pad(small, ((h // 8, h - h // 8 - small.shape[0]),
                           (w // 8, w - w // 8 - small.shape[1]), (0, 0)), mode="edge")
    return np.hstack([frame, right])


def test_two_faces_keep_one_identity(synth_clip, tmp_path: Path) -> None:
    """Two faces side by side: prepare follows the largest throughout (never a jump to the
    other) and says so; --face-index 1 follows the other one."""
    from hygie_w2l.dataset import PreparedDataset

    clip, _ = synth_clip
    two = make_variant(clip, tmp_path / "two.mp4", _two_faces, size=(640, 320))
    for index, side in ((0, "left"), (1, "right")):
        run = _cli(tmp_path, "prepare", str(two), "--out", f"ds{index}", "--face-index",
                   str(index))
        assert run.returncode == 0, run.stderr[-2000:]
        assert "several faces" in run.stdout and "following one face" in run.stdout
        data = PreparedDataset(tmp_path / f"ds{index}")
        x = np.asarray(data.landmarks)[data.usable][:, :, 0].mean(1)
        assert len(x) > 90 and ((x < 320).all() if side == "left" else (x > 320).all()), x
