"""``hygie-w2l train``: fine-tune a generator (Wav2Lip or the FiLM U-Net) on one person.

Reads top to bottom: set-up, data, models, optimisers, then one loop (step, evaluate and
keep the best, checkpoint, preview, log). ``--resume`` continues exactly from ``last.pt``
(weights, optimisers, step, RNG, schedule flags; the data of step s depends on s only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hygie_w2l import losses
from hygie_w2l.dataset import PreparedDataset, Sampler
from hygie_w2l.errors import HygieError
from hygie_w2l.generators import PixelGenerator, generator_class
from hygie_w2l.lip_shapes import LipsConfig, read_shapes, save_shapes, sidecar_path
from hygie_w2l.lips import LipsModel, LipsReport, fit_lips
from hygie_w2l.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from hygie_w2l.runs import (
    RunDir,
    TrainConfig,
    all_reduce_mean,
    batches,
    data_seeds,
    is_main,
    start_run,
    training_loop,
    unwrap,
)
from hygie_w2l.weights import DISC_FILE, EXPERT_FILE, official_path

LOG_FIELDS = ["loss", "l1", "temporal", "sync", "gen_adv", "disc", "mouth_l1", "sync_on"]


@dataclasses.dataclass
class State:
    step: int = 0
    best_val: float = math.inf
    sync_on: bool = False


# ----------------------------------------------------------------------- models ----

def build_generator(config: TrainConfig, data: PreparedDataset
                    ) -> tuple[nn.Module, PixelGenerator, str, bool]:
    """(model, its generator, how it was initialised, whether it starts from trained
    weights)."""
    cls = generator_class(config.arch)
    assert issubclass(cls, PixelGenerator), f"{cls.arch} does not train by gradient steps"
    if config.init and config.init != "scratch":
        model = load_checkpoint(config.init, expect=cls.arch).model
        return model, cls.of_model(model), f"from {config.init}", True
    official = official_path(cls.official_file) if cls.official_file else None
    if official is not None and config.init is None and official.exists():
        model = load_checkpoint(official, expect=cls.arch).model
        return model, cls.of_model(model), f"from {official}", True
    model = cls.new_model(data, config.film_channels)
    return model, cls.of_model(model), "from scratch", False


def load_expert(config: TrainConfig, generator: PixelGenerator, device: torch.device
                ) -> tuple[nn.Module | None, str]:
    """The frozen lip-sync expert for the generator, if it uses one and there is one."""
    if not generator.uses_expert:
        return None, (f"no sync loss (the {generator.arch} works on {generator.crop_kind} "
                      "crops, not the expert's faces)")
    path = Path(config.expert) if config.expert else official_path(EXPERT_FILE)
    if not path.exists() and config.expert is None:
        return None, f"no sync loss: no expert given and {path} is absent"
    expert = load_checkpoint(path, expect="syncnet_color").model.to(device).eval()
    for p in expert.parameters():
        p.requires_grad_(False)
    return expert, f"sync loss from the frozen expert {path}"


def build_disc(config: TrainConfig, generator: PixelGenerator, device: torch.device
               ) -> tuple[nn.Module | None, str]:
    if not config.gan:
        return None, "no GAN"
    if generator.crop_kind != "face":
        raise HygieError("--gan needs --arch wav2lip (the discriminator judges 96-px faces)")
    official = official_path(DISC_FILE)
    if official.exists():
        return load_checkpoint(official, expect="disc_qual").model.to(device).train(), \
            f"GAN with {official}"
    return build_model("disc_qual").to(device).train(), "GAN, discriminator from scratch"


# ---------------------------------------------------------------------- losses ----

def generator_losses(out: dict[str, torch.Tensor], config: TrainConfig, state: State,
                     expert: nn.Module | None, disc: nn.Module | None) -> dict[str, torch.Tensor]:
    pred, real, mouth = out["pred"], out["real"], out["mouth"]
    terms = {"l1": losses.weighted_l1(pred, real, mouth, config.mouth_weight,
                                      out.get("region")),
             "temporal": losses.temporal_loss(pred, real, mouth, time_dim=1)}
    loss = terms["l1"] + config.temporal_weight * terms["temporal"]
    if expert is not None:
        terms["sync"] = losses.sync_loss(expert, out["sync_mel"], out["pred_official"])
        if state.sync_on:
            loss = loss + config.sync_weight * terms["sync"]
    if disc is not None:
        terms["gen_adv"] = losses.adversarial_loss(disc, out["pred_official"], real=True)
        loss = loss + config.disc_weight * terms["gen_adv"]
    terms["loss"] = loss
    terms["mouth_l1"] = losses.mouth_l1(pred, real, mouth)
    return terms


def disc_step(disc: nn.Module, disc_opt: torch.optim.Optimizer,
              out: dict[str, torch.Tensor]) -> float:
    """One step of the quality discriminator: real faces real, generated faces fake."""
    disc_opt.zero_grad(set_to_none=True)
    real = out["real"].transpose(1, 2)
    loss = (losses.adversarial_loss(disc, real, real=True)
            + losses.adversarial_loss(disc, out["pred_official"].detach(), real=False)) / 2
    loss.backward()
    disc_opt.step()
    return float(loss.detach())


# ------------------------------------------------------------------- the run ----

@dataclasses.dataclass
class _Parts:
    """Everything one training run works with, built once by :func:`_set_up`."""

    config: TrainConfig
    data: PreparedDataset
    device: torch.device
    model: nn.Module  # DDP-wrapped when several processes train
    generator: PixelGenerator
    opt: torch.optim.Optimizer
    expert: nn.Module | None
    disc: nn.Module | None
    disc_opt: torch.optim.Optimizer | None
    train_set: Sampler
    val_set: Sampler
    run: RunDir
    notes: list[str]


def to_device(batch: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


def _forward(p: _Parts, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return p.generator.forward(p.model, to_device(batch, p.device))


@torch.no_grad()
def evaluate(p: _Parts, state: State) -> dict[str, float]:
    """Mean validation losses over a fixed set of batches (the same at every evaluation)."""
    p.model.eval()
    sums: dict[str, float] = {}
    for batch in batches(p.val_set, p.config.batch_size, 0, p.config.eval_batches):
        terms = generator_losses(_forward(p, batch), p.config, state, p.expert, None)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    p.model.train()
    return {k: all_reduce_mean(v / p.config.eval_batches) for k, v in sums.items()}


def _tile(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (H, N*W, 3) uint8 BGR."""
    arr = (images.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return np.concatenate(list(arr.transpose(0, 2, 3, 1)), axis=1)


@torch.no_grad()
def save_preview(p: _Parts, path: Path) -> None:
    """A grid: masked input | generated | real, for 4 validation samples (middle frame)."""
    model = unwrap(p.model).eval()
    batch = next(iter(batches(p.val_set, 4, 0, 1)))
    out = p.generator.forward(model, to_device(batch, p.device))
    t = out["pred"].shape[1] // 2
    rows = [_tile(out[k][:, t]) for k in ("input", "pred", "real")]
    model.train()
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


# ------------------------------------------------------------- save and restore ----

def save_run(path: Path, p: _Parts, state: State) -> None:
    if not is_main():
        return
    extra: dict[str, Any] = {"rng": torch.get_rng_state(), "best_val": state.best_val,
                             "sync_on": state.sync_on}
    if p.disc is not None and p.disc_opt is not None:
        extra.update(disc=p.disc.state_dict(), disc_opt=p.disc_opt.state_dict())
    meta = {"kind": "generator", "dataset": str(p.data.root), "dataset_key": p.data.meta["key"],
            "train_config": dataclasses.asdict(p.config)}
    save_checkpoint(path, unwrap(p.model), p.generator.arch, step=state.step,
                    optimizer=p.opt.state_dict(), meta=meta, extra=extra)


def restore_run(path: Path, p: _Parts) -> State:
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("dataset_key") != p.data.meta["key"]:
        raise HygieError(f"{path}: this run was trained on another dataset "
                         f"({ckpt.meta.get('dataset')}); resume it with that dataset.")
    unwrap(p.model).load_state_dict(ckpt.model.state_dict())
    if ckpt.optimizer:
        p.opt.load_state_dict(ckpt.optimizer)
    if p.disc is not None and p.disc_opt is not None and "disc" in ckpt.extra:
        p.disc.load_state_dict(ckpt.extra["disc"])
        p.disc_opt.load_state_dict(ckpt.extra["disc_opt"])
    torch.set_rng_state(ckpt.extra["rng"])
    return State(ckpt.step, float(ckpt.extra["best_val"]), bool(ckpt.extra["sync_on"]))


# ------------------------------------------------------------------------- main ----

@dataclasses.dataclass(frozen=True)
class TrainSummary:
    run: Path
    steps: int
    best_val: float
    notes: list[str]
    seconds_per_step: float
    skipped_samples: int = 0  # unreadable samples replaced by others (a damaged dataset)
    report: str = ""  # the held-out quality, in words (the lips model)


def train(dataset: str | Path, out: str | Path, config: TrainConfig, resume: bool = False
          ) -> TrainSummary:
    """Fine-tune the generator ``config.arch`` names: gradient steps for an image network,
    a fit of a few seconds for the audio-to-lips model."""
    if issubclass(generator_class(config.arch), PixelGenerator):
        return train_generator(dataset, out, config, resume)
    return train_lips(dataset, out, config, resume)


def train_lips(dataset: str | Path, out: str | Path, config: TrainConfig,
               resume: bool = False) -> TrainSummary:
    """Fit the audio-to-lips model on the training split, report it on the held-out one,
    write best.pt (and last.pt, the same: the fit is one piece, nothing to resume)."""
    data = PreparedDataset(dataset)
    run = RunDir(out, config, resume, ["opening_r", "lmd", "lmd_mean_shape"], (dataset,))
    if resume:
        done = load_checkpoint(run.last, expect="lips")
        said = ["the lips model was fitted already: nothing to resume"]
        for path in (run.best, run.last):  # a run written before the arrays: add them
            if path.is_file() and read_shapes(path) is None:
                model = load_checkpoint(path, expect="lips").model
                assert isinstance(model, LipsModel)
                save_shapes(model.shapes(), path)
                said.append(f"wrote {sidecar_path(path)}: lips renders skip torch")
                print(said[-1])
        return TrainSummary(run.path, done.step, float(done.meta["report"]["lmd"]), said,
                            0.0, report=LipsReport(**done.meta["report"]).text())
    start_run(dataclasses.replace(config, device="cpu"))
    try:
        model, report = fit_lips(data, LipsConfig(steps=config.steps, seed=config.seed))
    except (HygieError, KeyboardInterrupt):
        run.discard()  # the fit is one piece: nothing to resume
        raise
    run.log(config.steps, "val", {"opening_r": report.opening_r, "lmd": report.lmd,
                                  "lmd_mean_shape": report.lmd_mean_shape, "lr": 0.0,
                                  "seconds": report.seconds})
    meta = {"kind": "lips", "dataset": str(data.root), "dataset_key": data.meta["key"],
            "report": dataclasses.asdict(report), "train_config": dataclasses.asdict(config)}
    for path in (run.best, run.last):
        save_checkpoint(path, model, "lips", step=config.steps, meta=meta)
    return TrainSummary(run.path, config.steps, report.lmd, ["lips from scratch"],
                        report.seconds / max(config.steps, 1), report=report.text())


def _autocast(device: torch.device) -> torch.autocast:
    """Mixed precision on the GPU (bf16 where supported); plain fp32 on the CPU."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _set_up(dataset: str | Path, out: str | Path, config: TrainConfig, resume: bool
            ) -> tuple[_Parts, State]:
    """Device, data, the generator, the frozen expert, the optional discriminator, their
    optimisers and the run folder; the state to start from (resumed or fresh)."""
    device = start_run(config)
    data = PreparedDataset(dataset)
    model, generator, init_note, pretrained = build_generator(config, data)
    model = model.to(device).train()
    expert, expert_note = load_expert(config, generator, device)
    disc, disc_note = build_disc(config, generator, device)
    train_seed, val_seed = data_seeds(config)
    p = _Parts(config, data, device, model, generator,
               torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.999)),
               expert, disc,
               torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999))
               if disc is not None else None,
               generator.sampler(data, "train", length=10**9, seed=train_seed),
               generator.sampler(data, "val", length=10**9, seed=val_seed),
               RunDir(out, config, resume, LOG_FIELDS, (dataset,)),
               [f"{generator.arch} {init_note}", expert_note, disc_note])
    state = State(sync_on=pretrained and expert is not None)
    if resume:
        state = restore_run(p.run.last, p)
        p.run.rewind_log(state.step)
        p.notes.append(f"resumed at step {state.step}")
    if torch.distributed.is_initialized():
        p.model = torch.nn.parallel.DistributedDataParallel(model)
    return p, state


def _step(p: _Parts, batch: list[torch.Tensor], state: State) -> dict[str, float]:
    """One optimisation step of the generator (and of the discriminator, with --gan)."""
    with _autocast(p.device):
        terms = generator_losses(_forward(p, batch), p.config, state, p.expert, p.disc)
    p.opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    p.opt.step()
    values = {k: float(v.detach()) for k, v in terms.items()}
    if p.disc is not None and p.disc_opt is not None:
        values["disc"] = disc_step(p.disc, p.disc_opt, _forward(p, batch))
    return values


def _eval_and_keep_best(p: _Parts, state: State) -> dict[str, float]:
    val = evaluate(p, state)
    if p.expert is not None and not state.sync_on and \
            val.get("sync", 1.0) < p.config.sync_threshold:
        state.sync_on = True  # the official rule: lip-sync loss once outputs sync well enough
        p.notes.append(f"step {state.step}: sync loss switched on (val sync {val['sync']:.3f})")
    if val["mouth_l1"] < state.best_val:
        state.best_val = val["mouth_l1"]
        save_run(p.run.best, p, state)
    return val


def train_generator(dataset: str | Path, out: str | Path, config: TrainConfig,
                    resume: bool = False) -> TrainSummary:
    # Set-up: device, data, models, optimisers, run folder (resumed where asked).
    p, state = _set_up(dataset, out, config, resume)
    if is_main():
        print("\n".join(p.notes))
    # One loop: step, evaluate and keep the best, checkpoint, preview, log.
    start_step, started = state.step, time.perf_counter()
    bar = tqdm(total=config.steps, initial=state.step, desc="train", unit="step",
               disable=not is_main() or None)
    with training_loop(p.run, lambda: save_run(p.run.last, p, state), bar) as stop:
        for batch in batches(p.train_set, config.batch_size, state.step, config.steps,
                             config.num_workers):
            values = _step(p, batch, state)
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}", mouth=f"{values['mouth_l1']:.4f}")
            p.run.log(state.step, "train", {**values, "sync_on": float(state.sync_on),
                                            "lr": config.lr,
                                            "seconds": time.perf_counter() - started})
            if state.step % config.eval_every == 0 or state.step == config.steps:
                p.run.log(state.step, "val", _eval_and_keep_best(p, state))
            if state.step % config.checkpoint_every == 0 or state.step == config.steps:
                save_run(p.run.last, p, state)
            if is_main() and state.step % config.preview_every == 0:
                save_preview(p, p.run.path / "previews" / f"step_{state.step:07d}.png")
            stop.check()
    return TrainSummary(p.run.path, state.step, state.best_val, p.notes,
                        (time.perf_counter() - started) / max(state.step - start_step, 1),
                        p.data.skipped_samples)
