"""ONNX export of the generators (dynamic batch), checked against PyTorch, optional INT8.

BatchNorm is folded into the convolutions first (exact: eval-mode BN is an affine map per
channel), which the 8-bit quantiser needs and which saves a pass over every activation.
INT8 (Wav2Lip only) is *static* quantisation (QLinearConv: per-channel int8 weights, uint8
activations whose ranges are calibrated on real inputs): on a 2-core AVX2 CPU it runs the
Wav2Lip generator 1.4-1.7x faster than fp32 within a grey level, whereas dynamic
quantisation (ConvInteger) was slower than fp32 (scripts/bench_generator.py). The small
FiLM U-Net gains nothing from 8 bits and its FiLM modulations do not survive them.
Exports used by render are cached per checkpoint file.

onnxruntime is an optional dependency (``pip install 'hygie-w2l[onnx]'``; ``make install``
includes it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hygie_w2l.atomic import atomic_path
from hygie_w2l.errors import HygieError
from hygie_w2l.generators import PixelGenerator, generator_class
from hygie_w2l.models.loaded import checkpoint_file
from hygie_w2l.types import GENERATOR_ARCHS

if TYPE_CHECKING:  # a render that reuses an export runs it without torch (find_export)
    import torch
    from torch import nn

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
    int8_max_levels: float | None = None  # the largest pixel error, in 8-bit levels

    def int8_note(self) -> str:
        return (f"INT8 vs fp32 on the first batch: max error {self.int8_max_levels:.1f} levels, "
                f"relative {self.int8_relative_error:.1e}")


def require_onnxruntime() -> Any:
    """The onnxruntime module, or a clear error saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError("onnxruntime is not installed: pip install 'hygie-w2l[onnx]' "
                          "(make install includes it).") from exc
    return onnxruntime


def run_onnx(path: Path, inputs: tuple[torch.Tensor, ...], threads: int = 0) -> np.ndarray:
    """``path``'s output for ``inputs`` (checks and tests: render keeps its own session)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm2d that follows a (transposed)
    convolution in a Sequential folded into it (the BN becomes an Identity)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and \
                    isinstance(bn, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv,
                                                                          nn.ConvTranspose2d))
                seq[i + 1] = nn.Identity()
    return folded


Feeds = Mapping[str, np.ndarray]


def export_generator(model: nn.Module, generator: PixelGenerator, out: str | Path,
                     int8: bool = False, calibration: Iterable[Feeds] | None = None
                     ) -> ExportReport:
    """Write ``out`` (and ``out`` with ``.int8.onnx`` when asked, its activation ranges
    calibrated on ``calibration``: feeds {"mel": (B,1,80,16), "face": (B,C,S,S)} of real
    inputs; random inputs when None, which only suits benchmarks); check both against torch."""
    import torch

    if int8 and generator.int8_refusal:
        raise ExportError(f"no INT8 for the {generator.arch}: {generator.int8_refusal}. "
                          "Drop --int8.")
    reference = model.eval()
    model = fold_batchnorm(reference)
    out = Path(out)
    dynamic = {name: {0: "batch"} for name in ("mel", "face", "image")}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, generator.example_inputs(), str(tmp), dynamo=False,
                          input_names=["mel", "face"], output_names=["image"],
                          dynamic_axes=dynamic, opset_version=OPSET)
    feeds = list(calibration) if calibration is not None else \
        [_feeds(generator.example_inputs(batch=2)) for _ in range(4)]
    check = (torch.from_numpy(feeds[0]["mel"]), torch.from_numpy(feeds[0]["face"]))
    with torch.no_grad():
        expected = reference(*check).numpy()
    err = relative_error(run_onnx(out, check), expected)
    if err > MAX_RELATIVE_ERROR:
        raise ExportError(f"{out}: ONNX output differs from PyTorch (relative error {err:.2e})")
    if not int8:
        return ExportReport(out, err)
    int8_path = out.with_suffix(".int8.onnx")
    quantize_int8(out, int8_path, feeds)
    got = run_onnx(int8_path, check)
    return ExportReport(out, err, int8_path, relative_error(got, expected),
                        float(255 * np.abs(got - expected).max()))


def _feeds(inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {"mel": inputs[0].numpy(), "face": inputs[1].numpy()}


def quantize_int8(src: Path, dst: Path, calibration: Iterable[Feeds]) -> Path:
    """Static 8-bit quantisation: per-channel int8 weights, uint8 activations with ranges
    calibrated on ``calibration`` (each feed run one sample at a time)."""
    require_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
            self.feeds = feeds

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    samples = ({name: np.ascontiguousarray(a[i:i + 1]) for name, a in feed.items()}
               for feed in calibration for i in range(len(feed["mel"])))
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            quant_pre_process(str(src), str(prepared))
            quantize_static(str(prepared), str(tmp), Reader(samples),
                            quant_format=QuantFormat.QOperator, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            prepared.unlink(missing_ok=True)
    return dst


def cache_dir() -> Path:
    """Where render keeps its ONNX exports (cache.py)."""
    from hygie_w2l.cache import cache_root

    return cache_root() / "onnx"


@dataclasses.dataclass(frozen=True)
class CachedExport:
    """A render's export of one checkpoint file, and what it needs to run it without the
    checkpoint (so without torch): the generator's arch and crop, and one sample's working
    memory (the engine's batch size)."""

    path: Path  # the model to run: fp32, or INT8 when asked
    arch: str
    crop_px: int
    sample_bytes: int
    int8_note: str = ""  # INT8's error against fp32, measured at export

    def generator(self) -> PixelGenerator:
        cls = generator_class(self.arch)
        assert issubclass(cls, PixelGenerator)  # find_export checks it
        return cls(self.crop_px)

    def serves(self, generator: PixelGenerator) -> bool:
        """Whether this export is ``generator``'s model (a checkpoint file put back at the
        same path with the same size and time would otherwise reuse another's)."""
        return (self.arch, self.crop_px) == (generator.arch, generator.crop_px)


def _cache_paths(source: str | Path, int8: bool) -> tuple[Path, Path, Path]:
    """(fp32 model, the model asked for, what the export knows of its checkpoint) for
    checkpoint file ``source``: keyed by its path, size and modification time."""
    from hygie_w2l import __version__

    source = checkpoint_file(source)  # a run folder means its best.pt
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|"
                         f"{OPSET}|{__version__}".encode()).hexdigest()[:20]
    fp32 = cache_dir() / f"{key}.onnx"
    return fp32, fp32.with_suffix(".int8.onnx") if int8 else fp32, fp32.with_suffix(".json")


def find_export(source: str | Path, int8: bool) -> CachedExport | None:
    """The cached export of checkpoint file ``source`` (INT8 when asked), or None where
    there is none yet, its record is unreadable (it is exported again), or there is no such
    file (loading it says so)."""
    if not checkpoint_file(source).is_file():
        return None
    _, wanted, record = _cache_paths(source, int8)
    note = wanted.with_suffix(".txt")
    if not (wanted.exists() and record.exists() and (not int8 or note.exists())):
        return None
    try:
        meta = json.loads(record.read_text())
        found = CachedExport(wanted, str(meta["arch"]), int(meta["crop_px"]),
                             int(meta["sample_bytes"]), note.read_text() if int8 else "")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pixels = found.arch in GENERATOR_ARCHS and \
        issubclass(generator_class(found.arch), PixelGenerator)
    return found if pixels and found.crop_px > 0 and found.sample_bytes > 0 else None


def cached_export(model: nn.Module, generator: PixelGenerator, source: str | Path, int8: bool,
                  calibration: Iterable[Feeds], sample_bytes: int) -> CachedExport:
    """The ONNX model of checkpoint file ``source`` (INT8 when asked, calibrated on the
    first render's inputs), exported once and reused while the file is unchanged, with what
    a later render needs to run it without the checkpoint (find_export). For INT8 its error
    against fp32 is measured at export and kept beside it: a render that reuses it runs no
    PyTorch forward pass to say it."""
    found = find_export(source, int8)
    if found is not None and found.serves(generator):
        return found
    fp32, wanted, record = _cache_paths(source, int8)
    fp32.parent.mkdir(parents=True, exist_ok=True)
    report = export_generator(model, generator, fp32, int8=int8, calibration=calibration)
    if int8:
        with atomic_path(wanted.with_suffix(".txt")) as tmp:
            tmp.write_text(report.int8_note())
    with atomic_path(record) as tmp:  # last: it marks the export complete
        tmp.write_text(json.dumps({"arch": generator.arch, "crop_px": generator.crop_px,
                                   "sample_bytes": sample_bytes,
                                   "source": str(checkpoint_file(source).resolve())}))
    return CachedExport(wanted, generator.arch, generator.crop_px, sample_bytes,
                        report.int8_note() if int8 else "")
