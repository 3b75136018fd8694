"""The batched generator runner: model inputs + mel windows in, generated crops out.

One :class:`Engine` serves render, eval and INT8 calibration: torch on cpu/cuda/mps
(BatchNorm folded into the convolutions), or ONNX Runtime on the CPU (fp32, or static INT8
calibrated on the first batch of the first render with a checkpoint; both cached per
checkpoint file, see export.cached_export). Its batch is fitted to the device's free memory
and halved, rather than the work lost, when a GPU runs out.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from hygie_w2l.audio import mel_window
from hygie_w2l.doctor import proc_kb
from hygie_w2l.errors import HygieError
from hygie_w2l.generators import PixelGenerator
from hygie_w2l.models.loaded import Checkpoint
from hygie_w2l.types import EngineConfig

if TYPE_CHECKING:  # the ONNX engine with a cached export runs without torch
    import torch
    from torch import nn

    from hygie_w2l.dataset import PreparedDataset
    from hygie_w2l.export import CachedExport

# Batch size: as large as a share of the device's free memory allows, up to where a larger
# batch stops paying (on a CPU, batch 16 runs no faster than 8: scripts/bench_generator.py).
BATCH_CAP = {"cuda": 128, "mps": 32, "cpu": 8}
MEMORY_SHARE = {"cuda": 0.5, "mps": 0.25, "cpu": 0.1}
CALIBRATION_FRAMES = 32
GENERATOR_THREADS = 0
"""CPU threads of the generator inside a render, where blending, decoding and x264 run at
the same time (README: render speed); 0: every core (torch's and ONNX Runtime's default)."""


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def activation_bytes(model: nn.Module, mel: torch.Tensor, inputs: torch.Tensor) -> int:
    """Bytes of every module's output in one forward pass of (mel, inputs): an upper bound of
    the working memory of that batch (without gradients, most are freed as it goes)."""
    import torch

    total = 0

    def count(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if not list(m.children())]
    try:
        with torch.no_grad():
            model(mel, inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def free_memory_bytes(device: torch.device | str) -> int:
    """Memory free for the generator: the GPU's free memory, or the host's available RAM."""
    if getattr(device, "type", device) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    available = proc_kb("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available * 1024
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def fitted_batch(sample_bytes: int, device: torch.device | str,
                 free_bytes: int | None = None) -> int:
    """The batch size for ``device``: MEMORY_SHARE of its free memory divided by the working
    memory of one sample, capped by BATCH_CAP. At least 1."""
    kind = str(getattr(device, "type", device))
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    budget = free * MEMORY_SHARE.get(kind, 0.1)
    return int(np.clip(budget // max(sample_bytes, 1), 1, BATCH_CAP.get(kind, 8)))


def auto_batch_size(model: nn.Module, mel: torch.Tensor, inputs: torch.Tensor,
                    device: torch.device, free_bytes: int | None = None) -> int:
    """fitted_batch with one sample's working memory measured on ``mel``/``inputs`` (a batch
    of one)."""
    return fitted_batch(activation_bytes(model, mel.to(device), inputs.to(device)), device,
                        free_bytes)


class Engine:
    """Runs a generator's model on batches of (inputs, mel windows). The ONNX engine whose
    export of the checkpoint file is cached needs no checkpoint (``ckpt`` may be None) and
    never imports torch: it reads the arch, the crop and one sample's working memory beside
    the export (export.find_export)."""

    def __init__(self, ckpt: Checkpoint | None, generator: PixelGenerator, config: EngineConfig,
                 source: str | Path | None = None) -> None:
        """``source``: the checkpoint's file, which keys the ONNX engine's cached export."""
        if config.int8 and config.engine != "onnx":
            raise HygieError("--int8 quantises the ONNX engine's weights: add --engine onnx.")
        if config.engine == "onnx" and source is None:
            raise ValueError("the ONNX engine caches its export per checkpoint file: give it")
        self.generator, self.source, self.int8 = generator, source, config.int8
        self.onnx = config.engine == "onnx"
        self.threads = config.threads or GENERATOR_THREADS
        self.model: nn.Module | None = None
        self.session: Any = None
        self.parts = 1  # the ONNX engine's batches run in this many parts at once
        self.pool: ThreadPoolExecutor | None = None  # their threads
        self.note = ""  # what the engine did once (export reused, INT8 error), for the summary
        if self.onnx:
            from hygie_w2l.export import find_export, require_onnxruntime

            self._ort = require_onnxruntime()
            assert source is not None
            self.export: CachedExport | None = find_export(source, self.int8)
            if self.export is not None and not self.export.serves(generator):
                self.export = None  # another model's: exported again at the first batch
            if self.export is not None:
                self.sample_bytes = self.export.sample_bytes
            else:  # exported at the first batch, from the checkpoint's model
                if ckpt is None:  # it was there when the render began
                    raise HygieError(f"{source}: its ONNX export is no longer in the cache "
                                     "(cleared, or the checkpoint file changed during the "
                                     "render): render again.")
                self.model = ckpt.model  # folded only in the export, released once it is done
                self.sample_bytes = activation_bytes(self.model, *generator.example_inputs())
            self.batch_size = config.batch_size or fitted_batch(self.sample_bytes, "cpu")
        else:
            import torch

            from hygie_w2l.export import fold_batchnorm
            from hygie_w2l.runs import pick_device

            if ckpt is None:
                raise ValueError("the torch engine runs the checkpoint's model: give it")
            self.device = pick_device(config.device)
            if self.threads and self.device.type == "cpu":
                torch.set_num_threads(self.threads)
            self.model = fold_batchnorm(ckpt.model).to(self.device)
            self.batch_size = config.batch_size or auto_batch_size(
                self.model, *generator.example_inputs(), self.device)
        self.chunk = self.batch_size  # lowered when the device runs out of memory

    def __call__(self, inputs: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """inputs (B, C, S, S) float32, mels (B, 80, 16) -> (B, S, S, 3) uint8. On a device
        out of memory, the batch is halved (and stays halved) rather than the work lost."""
        outs, a = [], 0
        while a < len(inputs):
            try:
                outs.append(self._run(inputs[a:a + self.chunk], mels[a:a + self.chunk]))
                a += self.chunk
            except Exception as exc:
                if not self._out_of_memory(exc):
                    raise
                if self.chunk == 1:
                    raise HygieError("the GPU is out of memory even for one frame: close "
                                     "other GPU programs or render with --device cpu.") from None
                self.chunk = max(1, self.chunk // 2)
                import torch

                torch.cuda.empty_cache()
                tqdm.write(f"GPU out of memory: generating {self.chunk} frames at a time")
        return np.concatenate(outs) if outs else np.zeros((0,), np.uint8)

    def _out_of_memory(self, exc: Exception) -> bool:
        if self.onnx:
            return False
        import torch

        return isinstance(exc, torch.cuda.OutOfMemoryError)

    def generate(self, crops: np.ndarray, references: np.ndarray, mels: np.ndarray
                 ) -> np.ndarray:
        """The generator's output for crops and references (B, S, S, 3) uint8 and their mel
        windows (B, 80, 16): (B, S, S, 3) uint8."""
        return self(self.generator.inputs(crops, references), mels)

    def _open_session(self, mel: np.ndarray, inputs: np.ndarray) -> None:
        reused = self.export is not None
        if self.export is None:
            from hygie_w2l.export import cached_export

            assert self.source is not None and self.model is not None
            self.export = cached_export(self.model, self.generator, self.source, self.int8,
                                        [{"mel": mel, "face": inputs}], self.sample_bytes)
        path = self.export.path
        self.model = None  # the session holds the weights now
        options = self._ort.SessionOptions()
        # Idle ONNX Runtime threads spin by default, stealing the cores that blending,
        # tracking and the encoder need while the generator waits for its next batch.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # One thread per run, and a batch split across the threads in parts run at once:
        # a frame's convolutions are too small to split well (2 cores, 8 s of 720p: the
        # FiLM U-Net 7-15 % and Wav2Lip INT8 4-11 % less CPU than one run on both threads,
        # and faster in 5 of 7 alternated pairs)
        options.intra_op_num_threads = 1
        self.parts = self.threads or os.cpu_count() or 1
        if self.parts > 1:
            self.pool = ThreadPoolExecutor(self.parts, thread_name_prefix="onnx")
        self.session = self._ort.InferenceSession(str(path), options,
                                                  providers=["CPUExecutionProvider"])
        self.note = f"ONNX engine: {path}" + (" (cached)" if reused else " (exported)")
        if self.export.int8_note:
            self.note += f"; {self.export.int8_note}"

    def _run(self, inputs: np.ndarray, mels: np.ndarray) -> np.ndarray:
        mel = np.ascontiguousarray(mels, np.float32)[:, None]
        inputs = np.ascontiguousarray(inputs, np.float32)
        if self.onnx:
            if self.session is None:
                self._open_session(mel, inputs)
            names = [i.name for i in self.session.get_inputs()]

            def run(rows: slice) -> np.ndarray:
                feeds = dict(zip(names, (mel[rows], inputs[rows]), strict=True))
                return self.session.run(None, feeds)[0]

            if self.pool is None or len(inputs) == 1:
                out = run(slice(None))
            else:
                parts = min(self.parts, len(inputs))
                edges = np.linspace(0, len(inputs), parts + 1).round().astype(int)
                out = np.concatenate(list(self.pool.map(
                    run, [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)])))
            return to_uint8(out)
        import torch

        assert self.model is not None
        with torch.no_grad():
            out = self.model(torch.from_numpy(mel).to(self.device),
                             torch.from_numpy(inputs).to(self.device))
        return to_uint8(out.cpu().numpy())


def calibration_feeds(data: PreparedDataset, generator: PixelGenerator,
                      n: int = CALIBRATION_FRAMES, batch: int = 8
                      ) -> list[dict[str, np.ndarray]]:
    """Real generator inputs for INT8 calibration: ``n`` frames spread over the training
    split, as render would feed them (the frame is its own reference)."""
    usable = [int(i) for i in data.starts("train") if data.usable[i]]
    if not usable:
        raise HygieError(f"{data.root}: no usable training frames to calibrate on")
    picks = [usable[j] for j in np.linspace(0, len(usable) - 1, n).round().astype(int)]
    feeds = []
    for a in range(0, n, batch):
        idx = picks[a:a + batch]
        mels = np.stack([mel_window(data.mel, i, data.fps) for i in idx])[:, None]
        crops = data.array(generator.crop_kind).take(idx)
        feeds.append({"mel": mels.astype(np.float32), "face": generator.inputs(crops, crops)})
    return feeds
