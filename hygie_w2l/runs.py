"""What every training run shares: its configuration (presets + flags), its folder
(``last.pt``, ``best.pt``, ``log.csv``, ``previews/``, ``config.json``), the device and
threads, the deterministic data stream that makes ``--resume`` exact, and DDP.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from hygie_w2l.atomic import atomic_path, not_an_input, writable_folder
from hygie_w2l.dataset import Sampler as DataSampler
from hygie_w2l.errors import HygieError

PRESETS = ("quick", "standard", "hq")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    kind: Literal["generator", "expert", "lips"] = "generator"
    arch: str = "film_unet"
    preset: str = "quick"
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    eval_every: int = 100
    checkpoint_every: int = 100
    preview_every: int = 200
    eval_batches: int = 4
    patience: int = 4  # evaluations without improvement before the expert stops
    film_channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    gan: bool = False
    mouth_weight: float = 8.0
    temporal_weight: float = 1.0
    sync_weight: float = 0.01  # official: 0.01 without GAN, 0.03 with
    sync_threshold: float = 0.75  # official rule: sync loss on when val sync loss < this
    disc_weight: float = 0.07  # official high-quality recipe
    disc_lr: float = 1e-4
    init: str | None = None  # checkpoint to start from, "scratch", or None (auto)
    expert: str | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0


def load_preset(name: str, kind: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise HygieError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("hygie_w2l.presets").joinpath(f"{name}.toml").read_text()
    values = dict(tomllib.loads(text)[kind])
    if "film_channels" in values:
        values["film_channels"] = tuple(values["film_channels"])
    return values


def resolve_config(kind: str, preset: str, overrides: Mapping[str, Any]) -> TrainConfig:
    """Preset values, then every flag the user gave (None means 'not given')."""
    values: dict[str, Any] = {"kind": kind, "preset": preset, **load_preset(preset, kind)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("gan") and "sync_weight" not in overrides:
        values["sync_weight"] = 0.03
    return TrainConfig(**values)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HygieError("--device cuda: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def start_run(config: TrainConfig) -> torch.device:
    """Device, process group, threads and seed: the set-up every training run shares."""
    device = pick_device(config.device)
    init_distributed(device)
    setup_threads(device)
    torch.manual_seed(config.seed)
    return device


def data_seeds(config: TrainConfig) -> tuple[int, int]:
    """(train, validation) dataset seeds: each process draws its own training samples; the
    validation samples are the same for every process and every evaluation."""
    return config.seed * 1000 + rank(), 10**6 + config.seed


def setup_threads(device: torch.device) -> None:
    """On the CPU use every core for the maths (PyTorch may default to fewer)."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size()))


# --------------------------------------------------------------------------- DDP ----

def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init_distributed(device: torch.device) -> None:
    """Join the process group that ``torchrun`` describes (one code path for 1 or N)."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


def all_reduce_mean(value: float) -> float:
    if world_size() == 1 or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


# ------------------------------------------------------------------- data stream ----

class IndexStream(Sampler[int]):
    """Sample indices step * batch * world + rank * batch + i, from ``start_step`` on.

    Datasets seed each item from its index, so the data of step s is the same whether the
    run went straight through or was resumed at s.
    """

    def __init__(self, batch_size: int, start_step: int, end_step: int) -> None:
        self.batch, self.start, self.end = batch_size, start_step, end_step

    def __iter__(self) -> Iterator[int]:
        w, r = world_size(), rank()
        for step in range(self.start, self.end):
            base = (step * w + r) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.end - self.start) * self.batch


def batches(dataset: DataSampler, batch_size: int, start_step: int, end_step: int,
            num_workers: int = 0) -> DataLoader:
    """``dataset``'s items (numpy arrays) batched into tensors. A DataLoader reads any
    map-style dataset (``__getitem__`` and ``__len__``); its annotation asks for torch's class."""
    return DataLoader(cast("Dataset[Any]", dataset), batch_size=batch_size,
                      sampler=IndexStream(batch_size, start_step, end_step),
                      num_workers=num_workers, drop_last=False)


# ----------------------------------------------------------------------- run dir ----

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StepBoundary:
    """Ctrl-C, SIGTERM and SIGHUP wait for the end of the current training step.

    A stop that lands inside a step (after ``opt.step()`` but before the step is counted,
    or before its log row is written) would save a checkpoint whose weights, step and log
    disagree, and ``--resume`` would no longer continue exactly. Inside ``with
    StepBoundary() as stop:`` the first such signal is only recorded; ``stop.check()`` at the
    end of each step raises it there, through the handler that was installed before (the
    CLI's ``Stopped``, Python's ``KeyboardInterrupt``). A second signal stops at once, and
    ``stop.clean`` is then False: the caller keeps the last checkpoint instead of saving.
    Signals whose handler would not raise (default, ignored) and other threads are left as
    they are.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._pending: int | None = None
        self.clean = True

    def __enter__(self) -> StepBoundary:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):
                    self._previous[signum] = handler
                    signal.signal(signum, self._defer)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if self._pending is not None:  # asked twice: stop now, mid-step
            self.clean = False
            self._previous[signum](signum, frame)
            return
        self._pending = signum
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step (send it "
                    "again to stop at once)\n".encode())

    def check(self) -> None:
        """At the end of a step: raise a stop that arrived during it."""
        if self._pending is not None:
            signum, self._pending = self._pending, None
            self._previous[signum](signum, None)


@contextlib.contextmanager
def training_loop(run: RunDir, save_last: Callable[[], None], bar: Any
                  ) -> Iterator[StepBoundary]:
    """What wraps every training loop: stop signals wait for the end of the step
    (:class:`StepBoundary`, call ``check()`` there); a stop between steps saves ``last.pt``
    through ``save_last``, a user error discards the unfinished run, and the progress
    ``bar`` is closed whatever happens."""
    with StepBoundary() as stop:
        try:
            yield stop
        except KeyboardInterrupt:
            if stop.clean:  # stopped between steps: weights, step and log agree
                save_last()
            raise
        except HygieError:
            run.discard()
            raise
        finally:
            bar.close()


def _tensorboard(path: Path):  # type: ignore[no-untyped-def]
    """A TensorBoard writer in the run folder when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path / "tensorboard"))


class RunDir:
    """The run folder: config.json, log.csv, previews/, last.pt and best.pt."""

    def __init__(self, path: str | Path, config: TrainConfig, resume: bool,
                 fields: list[str], inputs: tuple[str | Path, ...] = ()) -> None:
        self.path = not_an_input(path, *inputs)
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        if self.last.exists() and not resume:
            raise HygieError(f"{self.path}: holds a run already. Continue it with --resume, "
                             "or choose another --out.")
        if resume and not self.last.exists():
            raise HygieError(f"{self.path}: nothing to resume (no last.pt). Drop --resume.")
        self.created = not self.path.exists()  # by this run: removed if it fails at once
        if is_main():
            writable_folder(self.path / "previews")
            with atomic_path(self.path / "config.json") as tmp:
                tmp.write_text(json.dumps(dataclasses.asdict(config), indent=1))
        self.fields = ["step", "phase", *fields, "lr", "seconds"]
        self._board = _tensorboard(self.path) if is_main() else None

    def discard(self) -> None:
        """Remove the run folder this run created, when it failed before its first
        checkpoint (nothing worth keeping, nothing to resume)."""
        if self.created and is_main() and not self.last.exists() and not self.best.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def rewind_log(self, step: int) -> None:
        """On --resume: forget the logged steps after ``step`` (they are done again), so
        log.csv holds each step once."""
        path = self.path / "log.csv"
        if not is_main() or not path.exists():
            return
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            csv.writer(f).writerows(kept)

    def log(self, step: int, phase: str, values: Mapping[str, float]) -> None:
        if not is_main():
            return
        row = {"step": step, "phase": phase, **{k: f"{v:.6g}" for k, v in values.items()}}
        path = self.path / "log.csv"
        new = not path.exists()
        if self._board is not None:
            for k, v in values.items():
                self._board.add_scalar(f"{phase}/{k}", v, step)
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)
