"""ONNX export of the generators (dynamic batch), checked against PyTorch, optional INT8.

onnxruntime is an optional dependency (``pip install 'hygie-w2l[onnx]'``; ``make install``
includes it).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hygie_w2l.atomic import atomic_path
from hygie_w2l.audio import MEL_WINDOW_FRAMES, N_MELS
from hygie_w2l.errors import HygieError

GENERATOR_ARCHS = ("wav2lip", "film_unet")
MAX_RELATIVE_ERROR = 1e-4
OPSET = 17


class ExportError(HygieError):
    pass


@dataclasses.dataclass(frozen=True)
class ExportReport:
    path: Path
    relative_error: float
    int8_path: Path | None = None
    int8_relative_error: float | None = None


def example_inputs(arch: str, model: nn.Module, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Random (mel, face) inputs of the right shapes for a generator."""
    mel = torch.randn(batch, 1, N_MELS, MEL_WINDOW_FRAMES)
    if arch == "wav2lip":
        return mel, torch.rand(batch, 6, 96, 96)
    size = int(getattr(model, "config").size_px)  # noqa: B009 - typed as Module
    return mel, torch.rand(batch, 4, size, size)


def _require_onnxruntime():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError("onnxruntime is not installed: pip install 'hygie-w2l[onnx]' "
                          "(make install includes it).") from exc
    return onnxruntime


def run_onnx(path: Path, inputs: tuple[torch.Tensor, ...], threads: int = 0) -> np.ndarray:
    ort = _require_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def export_generator(model: nn.Module, arch: str, out: str | Path,
                     int8: bool = False) -> ExportReport:
    """Write ``out`` (and ``out`` with ``.int8.onnx`` when asked); check fp32 against torch."""
    if arch not in GENERATOR_ARCHS:
        raise ExportError(f"only generators export to ONNX ({', '.join(GENERATOR_ARCHS)}), "
                          f"not {arch}")
    model = model.eval()
    out = Path(out)
    dynamic = {name: {0: "batch"} for name in ("mel", "face", "image")}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, example_inputs(arch, model), str(tmp), dynamo=False,
                          input_names=["mel", "face"], output_names=["image"],
                          dynamic_axes=dynamic, opset_version=OPSET)
    check = example_inputs(arch, model, batch=3)
    with torch.no_grad():
        expected = model(*check).numpy()
    err = relative_error(run_onnx(out, check), expected)
    if err > MAX_RELATIVE_ERROR:
        raise ExportError(f"{out}: ONNX output differs from PyTorch (relative error {err:.2e})")
    if not int8:
        return ExportReport(out, err)
    int8_path = out.with_suffix(".int8.onnx")
    quantize_int8(out, int8_path)
    return ExportReport(out, err, int8_path, relative_error(run_onnx(int8_path, check),
                                                            expected))


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic 8-bit quantisation of weights (activations quantised on the fly)."""
    _require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp:
        # ConvInteger on the CPU takes uint8 weights only.
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QUInt8)
    return dst
