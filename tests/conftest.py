"""Shared fixtures: the real clips of $HYGIE_TEST_DATA (skipped when unset) and one
synthetic talking-face clip generated once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hygie_w2l import native

TESTS_DATA = Path(__file__).parent / "data"


def real_data_dir() -> Path | None:
    value = os.environ.get("HYGIE_TEST_DATA")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    folder = real_data_dir()
    if folder is None:
        pytest.skip("real footage: set HYGIE_TEST_DATA to the folder of shared/data")
    return folder


@pytest.fixture(scope="session")
def synth_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 4-second synthetic clip (320 px, 25 fps) and its ground truth."""
    from hygie_w2l.fixtures import FixtureConfig, write_fixture

    out = tmp_path_factory.mktemp("synth") / "synth.mp4"
    truth = write_fixture(out, FixtureConfig(seconds=4.0, seed=0))
    return out, truth


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess (exit code and stderr as a user sees)."""
    return subprocess.run([sys.executable, "-m", "hygie_w2l.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def load_truth(path: Path) -> dict:
    return json.loads(path.read_text())


def make_variant(src: Path, out: Path, edit, size: tuple[int, int] | None = None) -> Path:
    """Re-encode ``src`` frame by frame through ``edit(frame, index) -> frame``, keeping its
    audio: the way tests make videos with missing faces, two faces or another size."""
    import tempfile

    from hygie_w2l import media

    info = media.probe(src)
    w, h = size or (info.width, info.height)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "v.mp4"
        with media.VideoWriter(video, w, h, 25) as writer:
            for i, frame in enumerate(media.read_frames(src, fps=25, info=info)):
                writer.write(edit(frame, i))
        media.mux(video, src, out)
    return out


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-second synthetic clip, prepared (held-out split of ~30 frames)."""
    from hygie_w2l.crops import CropConfig
    from hygie_w2l.fixtures import FixtureConfig, write_fixture
    from hygie_w2l.prepare import PrepareConfig, prepare

    folder = tmp_path_factory.mktemp("synthds")
    write_fixture(folder / "person.mp4", FixtureConfig(seconds=8.0, seed=3))
    prepare(folder / "person.mp4", folder / "ds",
            config=PrepareConfig(crops=CropConfig(mouth_px=96)))
    return folder / "ds"


@pytest.fixture(scope="session")
def random_film_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FiLM U-Net with random weights that draws something (not the identity)."""
    import torch

    from hygie_w2l.models.checkpoint import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("film_unet", {"size_px": 96, "channels": (8, 16, 32, 64, 128)})
    torch.nn.init.normal_(model.head.weight, std=0.05)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "film.pt", model, "film_unet")


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 20-second fixture: enough syllables for a held-out split worth scoring."""
    from hygie_w2l.fixtures import FixtureConfig, write_fixture

    out = tmp_path_factory.mktemp("long") / "person.mp4"
    return out, write_fixture(out, FixtureConfig(seconds=20.0, seed=11))


@pytest.fixture(scope="session")
def long_dataset(long_clip: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    """The 20-second fixture, prepared (mouth crops of 96 px)."""
    from hygie_w2l.crops import CropConfig
    from hygie_w2l.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("long") / "ds"
    prepare(long_clip[0], out, config=PrepareConfig(crops=CropConfig(mouth_px=96)))
    return out


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test run (and the commands it starts) caches in a folder of its own, never in
    the user's ~/.cache/hygie-w2l."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["HYGIE_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def two_mouths(synth_clip: tuple[Path, dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        np.ndarray]:
    """A frame of the synthetic clip (BGR), its tracked landmarks (P, 2), and another
    frame's mouth as a library patch with its lip points: what a composition needs."""
    from hygie_w2l import media
    from hygie_w2l.face_tracker import FaceTracker
    from hygie_w2l.library import lip_points

    frames = [f for _, f in zip(range(30), media.read_frames(synth_clip[0]), strict=False)]
    tracker = FaceTracker()
    points = [tracker.step(f)[0] for f in (frames[5], frames[25])]
    tracker.close()
    assert all(p is not None for p in points)
    patch = frames[25][100:200, 60:190].copy()
    patch_points = lip_points(np.asarray(points[1])[:, :2]) - (60, 100)
    return frames[5], np.asarray(points[0])[:, :2], patch, patch_points


@pytest.fixture
def kernels():
    """The compiled module; a machine that could not build it skips (CI must have it)."""
    if native.kernels is None:
        if os.environ.get("CI"):
            pytest.fail("hygie_w2l._kernels was not built: `make install` needs a C compiler")
        pytest.skip("hygie_w2l._kernels is not built here (no C compiler at install)")
    return native.kernels
