from pathlib import Path

import pytest
import torch

from hygie_w2l.export import ExportError, export_generator, run_onnx
from hygie_w2l.models.checkpoint import build_model, save_official_layout
from tests.conftest import run_cli

pytest.importorskip("onnxruntime")


def _random_film_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("film_unet", {"size_px": 96, "channels": (16, 32, 64, 128)})
    torch.nn.init.normal_(model.head.weight, std=0.1)  # not the identity it starts as
    return model.eval()


def test_film_unet_onnx_matches_torch_with_dynamic_batch(tmp_path: Path) -> None:
    model = _random_film_unet()
    report = export_generator(model, "film_unet", tmp_path / "f.onnx", int8=True)
    assert report.relative_error < 1e-4
    mel, crop = torch.randn(5, 1, 80, 16), torch.rand(5, 4, 96, 96)
    with torch.no_grad():
        expected = model(mel, crop).numpy()
    got = run_onnx(report.path, (mel, crop))
    assert got.shape == (5, 3, 96, 96) and abs(got - expected).max() < 1e-4
    assert report.int8_path is not None and report.int8_path.exists()
    assert report.int8_relative_error is not None and report.int8_relative_error < 0.2


@pytest.mark.slow
def test_cli_exports_an_official_layout_wav2lip(tmp_path: Path) -> None:
    ckpt = save_official_layout(tmp_path / "wav2lip.pth", build_model("wav2lip"))
    run = run_cli("export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "w.onnx"))
    assert run.returncode == 0, run.stderr
    assert "relative error" in run.stdout and (tmp_path / "w.onnx").stat().st_size > 1e8


def test_only_generators_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="only generators"):
        export_generator(build_model("disc_qual"), "disc_qual", tmp_path / "d.onnx")
    ckpt = save_official_layout(tmp_path / "expert.pth", build_model("syncnet_color"))
    run = run_cli("export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.onnx"))
    assert run.returncode == 2 and "syncnet_color checkpoint" in run.stderr
