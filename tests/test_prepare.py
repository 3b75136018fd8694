from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from hygie_w2l import media
from hygie_w2l.crops import CropConfig
from hygie_w2l.dataset import PreparedDataset, SyncDataset
from hygie_w2l.fixtures import FixtureConfig, write_fixture
from hygie_w2l.generators.film_unet import FilmUNetSampler
from hygie_w2l.generators.wav2lip import Wav2LipSampler
from hygie_w2l.geometry import transform_points
from hygie_w2l.landmarks import outer_inner_rings
from hygie_w2l.prepare import PrepareConfig, prepare
from hygie_w2l.split import sample_reach
from tests.conftest import make_variant, run_cli


@pytest.fixture(scope="module")
def synth_dataset(synth_clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "synth"
    prepare(synth_clip[0], out)
    return out


def test_every_frame_has_a_face_and_the_files_are_complete(synth_dataset: Path) -> None:
    meta = json.loads((synth_dataset / "meta.json").read_text())
    assert meta["n_frames"] == 100 and meta["track"]["missing_ranges"] == []
    assert set(meta["stages"]) == {"audio", "track", "crops", "split"}
    assert meta["source_sha256"] and meta["versions"]["mediapipe"] == "0.10.21"
    d = PreparedDataset(synth_dataset)
    assert d.array("face").shape == (100, 96, 96, 3)
    assert d.array("mouth").shape == (100, 128, 128, 3)
    assert d.array("hd").shape[0] == 100 and d.mel.shape[0] == 80


def test_mouth_masks_sit_on_the_lips(synth_dataset: Path) -> None:
    d = PreparedDataset(synth_dataset)
    masks = d.array("mouth_mask")
    for i in range(d.n_frames):
        outer, _ = outer_inner_rings(np.asarray(d.landmarks[i]))
        lips = transform_points(outer, d.plan.mouth[i])
        ys, xs = np.nonzero(masks[i] > 127)
        assert lips[:, 0].min() <= xs.mean() <= lips[:, 0].max(), i
        assert lips[:, 1].min() <= ys.mean() <= lips[:, 1].max(), i


def test_smoothed_box_jitters_less_than_raw(synth_dataset: Path) -> None:
    raw = np.load(synth_dataset / "raw_boxes.npy")
    smooth = np.load(synth_dataset / "boxes.npy")
    jitter = lambda b: np.abs(np.diff(b, 2, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.7 * jitter(raw), (jitter(smooth), jitter(raw))


def test_datasets_have_the_official_layouts(synth_dataset: Path) -> None:
    d = PreparedDataset(synth_dataset)
    faces, mel, label = SyncDataset(d, "train")[0]
    assert faces.shape == (15, 48, 96) and mel.shape == (1, 80, 16) and label.shape == (1,)
    x, mels, sync_mel, y, mouth = Wav2LipSampler(d, "train")[3]
    assert x.shape == (6, 5, 96, 96) and mels.shape == (5, 1, 80, 16)
    assert y.shape == (3, 5, 96, 96) and mouth.shape == (1, 5, 96, 96)
    assert np.abs(x[:3, :, 48:]).sum() == 0 and np.abs(x[:3, :, :48]).sum() > 0  # lower half masked
    # numpy float32: torch's DataLoader batches them into tensors, and nothing here imports torch
    assert all(a.dtype == np.float32 for a in (x, mels, sync_mel, y, mouth, faces, mel, label))
    crop, mels2, real, mask = FilmUNetSampler(d, "val")[1]
    assert crop.shape == (2, 4, 128, 128) and real.shape == (2, 3, 128, 128)
    assert mels2.shape == (2, 1, 80, 16) and mask.shape == (2, 1, 128, 128)
    for name in ("train", "val"):
        a, b = d.split.segment(name)
        for s in d.starts(name):
            lo, hi = sample_reach(int(s))
            assert a <= lo and hi <= b


def test_rerun_is_skipped_and_a_new_config_rebuilds(synth_clip, synth_dataset: Path,
                                                    tmp_path: Path) -> None:
    start = time.monotonic()
    assert prepare(synth_clip[0], synth_dataset).skipped
    assert time.monotonic() - start < 5
    out = tmp_path / "ds"
    prepare(synth_clip[0], out)
    summary = prepare(synth_clip[0], out, config=PrepareConfig(crops=CropConfig(mouth_px=96)))
    assert not summary.skipped
    assert PreparedDataset(out).array("mouth").shape[1:] == (96, 96, 3)


def test_resumes_after_an_interrupted_stage(synth_clip, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare(synth_clip[0], out)
    meta = json.loads((out / "meta.json").read_text())
    del meta["stages"]["crops"], meta["stages"]["split"]  # as if killed while cropping
    (out / "meta.json").write_text(json.dumps(meta))
    summary = prepare(synth_clip[0], out)
    assert not summary.skipped and PreparedDataset(out).n_frames == 100


def test_a_video_without_a_face_is_a_clear_error(synth_clip, tmp_path: Path) -> None:
    blank = make_variant(synth_clip[0], tmp_path / "noface.mp4",
                         lambda f, i: np.full_like(f, 90))
    run = run_cli("prepare", str(blank), "--out", str(tmp_path / "ds"))
    assert run.returncode == 2 and "noface.mp4: no face found" in run.stderr


def test_a_face_in_the_first_half_only_is_reported(tmp_path: Path) -> None:
    clip = tmp_path / "long.mp4"
    write_fixture(clip, FixtureConfig(seconds=8.0, seed=3))
    half = make_variant(clip, tmp_path / "half.mp4",
                        lambda f, i: f if i < 120 else np.full_like(f, 90))
    summary = prepare(half, tmp_path / "ds")
    assert [list(r) for r in summary.meta["track"]["missing_ranges"]] == [[120, 200]]
    assert "no face in 80 frames: 4.80-8.00 s" in summary.text()
    d = PreparedDataset(tmp_path / "ds")
    starts = np.r_[d.starts("train"), d.starts("val")]
    assert len(starts) > 0 and all(s + 5 <= 120 for s in starts)  # no sample without a face


def test_a_portrait_rotated_phone_video_is_upright(synth_clip, tmp_path: Path) -> None:
    rotated = tmp_path / "rotated.mp4"
    media.run_ffmpeg(["-v", "error", "-display_rotation", "90", "-i", str(synth_clip[0]),
                      "-c", "copy", "-y", str(rotated)], "rotate")
    info = media.probe(rotated)
    assert info.rotation_deg in (90, 270)
    summary = prepare(rotated, tmp_path / "ds")
    assert summary.meta["track"]["missing_ranges"] == []
    assert summary.meta["source_info"]["rotation_deg"] in (90, 270)


def test_a_4k_video_keeps_memory_flat(tmp_path: Path) -> None:
    clip = tmp_path / "small.mp4"
    write_fixture(clip, FixtureConfig(seconds=3.0, size_px=1080, seed=5))

    def to_4k(frame: np.ndarray, i: int) -> np.ndarray:
        canvas = np.full((2160, 3840, 3), 60, np.uint8)
        canvas[540:1620, 1380:2460] = frame
        return canvas

    big = make_variant(clip, tmp_path / "4k.mp4", to_4k, size=(3840, 2160))
    run = run_cli("prepare", str(big), "--out", str(tmp_path / "ds"))
    assert run.returncode == 0, run.stderr
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["track"]["missing_ranges"] == [] and meta["n_frames"] == 75
    assert meta["peak_memory_mb"] < 1500


def test_too_short_a_video_is_refused(tmp_path: Path) -> None:
    clip = tmp_path / "short.mp4"
    write_fixture(clip, FixtureConfig(seconds=1.5))
    run = run_cli("prepare", str(clip), "--out", str(tmp_path / "ds"))
    assert run.returncode == 2 and "too few" in run.stderr


@pytest.mark.parametrize("name,audio", [("talk_selfie_24s.mp4", None),
                                        ("talk_sun_22s.mp4", "talk_sun_22s.wav")])
def test_real_footage_prepares_with_a_face_in_every_frame(real_data: Path, tmp_path: Path,
                                                          name: str, audio: str | None) -> None:
    summary = prepare(real_data / name, tmp_path / "ds",
                      audio=real_data / audio if audio else None)
    assert summary.meta["track"]["missing_ranges"] == []
    d = PreparedDataset(tmp_path / "ds")
    assert d.usable.all() and len(d.starts("train")) > 300 and len(d.starts("val")) > 50
