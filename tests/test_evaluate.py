"""`hygie-w2l eval` end to end on the prepared synthetic clip: the report's files, the real
video as the ceiling of every score, the baselines in the same table, HD retrieval scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hygie_w2l import media
from hygie_w2l.evaluate import EvalConfig, evaluate
from hygie_w2l.hd import HDConfig
from hygie_w2l.library import build_index
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def report(synth_dataset: Path, random_film_ckpt: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    build_index([synth_dataset], folder / "lib")
    evaluate(synth_dataset, random_film_ckpt, folder / "report",
             EvalConfig(hd=HDConfig(index=folder / "lib"), expert=None))
    return folder / "report"


def test_report_files_and_the_real_video_is_the_ceiling(report: Path) -> None:
    for name in ("metrics.json", "report.md", "opening.png", "metrics.png", "worst_frames.png",
                 "side_by_side.mp4"):
        assert (report / name).stat().st_size > 0, name
    m = json.loads((report / "metrics.json").read_text())
    rows = m["variants"]
    assert list(rows) == ["template", "generated", "generated+hd", "real"]
    real = rows["real"]
    assert real["lmd"] == 0 and real["opening_r"] == pytest.approx(1.0)
    assert real["offset_frames"] == 0 and real["psnr_db"] == float("inf")
    assert real["sharpness_rel"] == pytest.approx(1.0)
    assert real["flicker_rel"] == pytest.approx(1.0)
    for name in ("template", "generated", "generated+hd"):
        assert 0 < rows[name]["lmd"] < 0.5 and rows[name]["psnr_db"] < 60, name
    # the random generator draws something else than the template mouth
    assert rows["generated"]["psnr_db"] != pytest.approx(rows["template"]["psnr_db"])
    assert m["hd"]["frames"] > 0 and m["n_frames"] >= 20
    assert "LMD" in (report / "report.md").read_text()
    info = media.probe(report / "side_by_side.mp4")
    assert info.video_codec == "h264" and info.audio_streams
    assert abs(info.n_frames - m["n_frames"]) <= 1
    assert media.read_metadata(report / "side_by_side.mp4")["hygie_synthetic_mouth"] == "1"
    opening = np.array([np.nan if x is None else x for x in m["openings"]["real"]])
    assert np.nanstd(opening) > 0.02  # the held-out mouth moves


def test_eval_cli_reports_missing_sync_model_and_bad_inputs(synth_dataset: Path,
                                                            random_film_ckpt: Path,
                                                            tmp_path: Path) -> None:
    r = run_cli("eval", str(synth_dataset), "--checkpoint", str(random_film_ckpt), "--out",
                str(tmp_path / "r"), "--no-video", "--max-frames", "15")
    assert r.returncode == 0, r.stderr
    assert "| template |" in r.stdout and "syncnet_v2.model is absent" in r.stdout
    assert not (tmp_path / "r" / "side_by_side.mp4").exists()
    r = run_cli("eval", str(tmp_path), "--checkpoint", str(random_film_ckpt), "--out",
                str(tmp_path / "r2"))
    assert r.returncode == 2 and "not a prepared dataset" in r.stderr
    r = run_cli("eval", str(synth_dataset), "--checkpoint", str(tmp_path / "none.pt"), "--out",
                str(tmp_path / "r3"))
    assert r.returncode == 2 and "none.pt" in r.stderr
