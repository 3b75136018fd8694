from collections import Counter
from pathlib import Path

import pytest
import torch

from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.export import ExportError, export_generator, fold_batchnorm, run_onnx
from hygie_w2l.generate import calibration_feeds
from hygie_w2l.generators.film_unet import FilmUNetGenerator
from hygie_w2l.generators.wav2lip import Wav2LipGenerator
from hygie_w2l.models.checkpoint import build_model, save_official_layout
from tests.conftest import run_cli

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _random_film_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("film_unet", {"size_px": 96, "channels": (16, 32, 64, 128)})
    torch.nn.init.normal_(model.head.weight, std=0.1)  # not the identity it starts as
    return model.eval()


def test_film_unet_onnx_matches_torch_with_dynamic_batch(tmp_path: Path) -> None:
    model = _random_film_unet()
    report = export_generator(model, FilmUNetGenerator(96), tmp_path / "f.onnx")
    assert report.relative_error < 1e-4
    mel, crop = torch.randn(5, 1, 80, 16), torch.rand(5, 4, 96, 96)
    with torch.no_grad():
        expected = model(mel, crop).numpy()
    got = run_onnx(report.path, (mel, crop))
    assert got.shape == (5, 3, 96, 96) and abs(got - expected).max() < 1e-4
    with pytest.raises(ExportError, match="no INT8 for the film_unet"):
        export_generator(model, FilmUNetGenerator(96), tmp_path / "g.onnx", int8=True)


@pytest.mark.slow
def test_wav2lip_int8_is_static_8_bit_within_a_grey_level(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = build_model("wav2lip").eval()
    report = export_generator(model, Wav2LipGenerator(), tmp_path / "w.onnx", int8=True)
    assert report.int8_path is not None and report.int8_relative_error is not None
    ops = Counter(n.op_type for n in onnx.load(str(report.int8_path)).graph.node)
    assert ops["QLinearConv"] >= 40 and ops["Conv"] == 0  # really 8-bit convolutions
    mel, face = torch.randn(4, 1, 80, 16), torch.rand(4, 6, 96, 96)
    with torch.no_grad():
        expected = model(mel, face).numpy()
    assert 255 * abs(run_onnx(report.int8_path, (mel, face)) - expected).max() < 2.0


def test_batchnorm_folding_is_exact_and_removes_every_batchnorm() -> None:
    torch.manual_seed(1)
    model = build_model("wav2lip").eval()
    for m in model.modules():  # trained-looking statistics, not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    mel, face = torch.randn(3, 1, 80, 16), torch.rand(3, 6, 96, 96)
    with torch.no_grad():
        assert (folded(mel, face) - model(mel, face)).abs().max() < 1e-5


@pytest.mark.slow
def test_int8_export_calibrated_on_a_prepared_dataset(synth_dataset: Path,
                                                     tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("wav2lip").eval()
    ckpt = save_official_layout(tmp_path / "wav2lip.pth", model)
    run = run_cli("export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "w.onnx"),
                  "--int8", "--calibrate", str(synth_dataset))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "w.int8.onnx").exists() and "INT8, relative error" in run.stdout
    feeds = calibration_feeds(PreparedDataset(synth_dataset), Wav2LipGenerator(), n=8)
    assert len(feeds) == 1 and feeds[0]["face"].shape == (8, 6, 96, 96)
    inputs = (torch.from_numpy(feeds[0]["mel"]), torch.from_numpy(feeds[0]["face"]))
    with torch.no_grad():
        expected = model(*inputs).numpy()
    got = run_onnx(tmp_path / "w.int8.onnx", inputs)
    assert 255 * abs(got - expected).max() < 2.0  # within a grey level or so on real faces


@pytest.mark.slow
def test_cli_exports_an_official_layout_wav2lip(tmp_path: Path) -> None:
    ckpt = save_official_layout(tmp_path / "wav2lip.pth", build_model("wav2lip"))
    run = run_cli("export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "w.onnx"))
    assert run.returncode == 0, run.stderr
    assert "relative error" in run.stdout and (tmp_path / "w.onnx").stat().st_size > 1e8


def test_only_generators_export(tmp_path: Path) -> None:
    ckpt = save_official_layout(tmp_path / "expert.pth", build_model("syncnet_color"))
    run = run_cli("export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.onnx"))
    assert run.returncode == 2 and "syncnet_color checkpoint" in run.stderr
