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
from hygie_w2l.dataset import GeneratorDataset, MouthCropDataset, PreparedDataset
from hygie_w2l.errors import HygieError
from hygie_w2l.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from hygie_w2l.runs import (
    RunDir,
    TrainConfig,
    all_reduce_mean,
    batches,
    data_seeds,
    is_main,
    start_run,
    unwrap,
)

OFFICIAL_DIR = Path("checkpoints")
LOG_FIELDS = ["loss", "l1", "temporal", "sync", "gen_adv", "disc", "mouth_l1", "sync_on"]


@dataclasses.dataclass
class State:
    step: int = 0
    best_val: float = math.inf
    sync_on: bool = False


# ----------------------------------------------------------------------- models ----

def build_generator(config: TrainConfig, data: PreparedDataset) -> tuple[nn.Module, str, bool]:
    """(model, how it was initialised, whether it starts from trained weights)."""
    arch = config.arch
    if config.init and config.init != "scratch":
        ckpt = load_checkpoint(config.init, expect=arch)
        return ckpt.model, f"from {config.init}", True
    official = OFFICIAL_DIR / "wav2lip.pth"
    if arch == "wav2lip" and config.init is None and official.exists():
        return load_checkpoint(official, expect="wav2lip").model, f"from {official}", True
    size = int(data.meta["config"]["mouth_size_px"])
    cfg = {"size_px": size, "channels": config.film_channels} if arch == "film_unet" else None
    return build_model(arch, cfg), "from scratch", False


def load_expert(config: TrainConfig, device: torch.device) -> tuple[nn.Module | None, str]:
    """The frozen lip-sync expert for the Wav2Lip generator, if there is one."""
    if config.arch != "wav2lip":
        return None, "no sync loss (the FiLM U-Net works on mouth crops, not expert faces)"
    path = Path(config.expert) if config.expert else OFFICIAL_DIR / "lipsync_expert.pth"
    if not path.exists() and config.expert is None:
        return None, f"no sync loss: no expert given and {path} is absent"
    expert = load_checkpoint(path, expect="syncnet_color").model.to(device).eval()
    for p in expert.parameters():
        p.requires_grad_(False)
    return expert, f"sync loss from the frozen expert {path}"


def build_disc(config: TrainConfig, device: torch.device) -> tuple[nn.Module | None, str]:
    if not config.gan:
        return None, "no GAN"
    if config.arch != "wav2lip":
        raise HygieError("--gan needs --arch wav2lip (the discriminator judges 96-px faces)")
    official = OFFICIAL_DIR / "visual_quality_disc.pth"
    if official.exists():
        return load_checkpoint(official, expect="disc_qual").model.to(device).train(), \
            f"GAN with {official}"
    return build_model("disc_qual").to(device).train(), "GAN, discriminator from scratch"


# ---------------------------------------------------------------------- forward ----

def forward(model: nn.Module, batch: list[torch.Tensor], arch: str
            ) -> dict[str, torch.Tensor]:
    """Predictions and targets as (B, T, C, H, W) whatever the architecture."""
    if arch == "film_unet":
        crop, mel, real, lips = batch  # (B, 2, 4, S, S), (B, 2, 1, 80, 16), ...
        b, t = crop.shape[:2]
        pred = model(mel.flatten(0, 1), crop.flatten(0, 1)).unflatten(0, (b, t))
        # outside the generator's mask the reference shows through and is never pasted
        return {"pred": pred, "real": real, "mouth": lips, "input": crop[:, :, :3],
                "region": crop[:, :, 3:]}
    x, mels, sync_mel, real, mouth = batch  # official layouts (B, C, T, H, W)
    pred = model(mels, x)
    return {"pred": pred.transpose(1, 2), "real": real.transpose(1, 2),
            "mouth": mouth.transpose(1, 2), "input": x[:, :3].transpose(1, 2),
            "pred_official": pred, "sync_mel": sync_mel}


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


# ------------------------------------------------------------ evaluate, preview ----

def to_device(batch: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


@torch.no_grad()
def evaluate(model: nn.Module, val_set: torch.utils.data.Dataset, config: TrainConfig,
             state: State, expert: nn.Module | None, device: torch.device) -> dict[str, float]:
    """Mean validation losses over a fixed set of batches (the same at every evaluation)."""
    model.eval()
    sums: dict[str, float] = {}
    for batch in batches(val_set, config.batch_size, 0, config.eval_batches):
        terms = generator_losses(forward(model, to_device(batch, device), config.arch),
                                 config, state, expert, None)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    model.train()
    return {k: all_reduce_mean(v / config.eval_batches) for k, v in sums.items()}


def _tile(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (H, N*W, 3) uint8 BGR."""
    arr = (images.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return np.concatenate(list(arr.transpose(0, 2, 3, 1)), axis=1)


@torch.no_grad()
def save_preview(model: nn.Module, val_set: torch.utils.data.Dataset, config: TrainConfig,
                 path: Path, device: torch.device) -> None:
    """A grid: masked input | generated | real, for 4 validation samples (middle frame)."""
    model.eval()
    batch = next(iter(batches(val_set, 4, 0, 1)))
    out = forward(model, to_device(batch, device), config.arch)
    t = out["pred"].shape[1] // 2
    rows = [_tile(out[k][:, t]) for k in ("input", "pred", "real")]
    model.train()
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


# ------------------------------------------------------------- save and restore ----

def save_run(path: Path, model: nn.Module, arch: str, opt: torch.optim.Optimizer,
             state: State, config: TrainConfig, data: PreparedDataset,
             disc: nn.Module | None, disc_opt: torch.optim.Optimizer | None) -> None:
    if not is_main():
        return
    extra: dict[str, Any] = {"rng": torch.get_rng_state(), "best_val": state.best_val,
                             "sync_on": state.sync_on}
    if disc is not None and disc_opt is not None:
        extra.update(disc=disc.state_dict(), disc_opt=disc_opt.state_dict())
    meta = {"kind": "generator", "dataset": str(data.root), "dataset_key": data.meta["key"],
            "train_config": dataclasses.asdict(config)}
    save_checkpoint(path, unwrap(model), arch, step=state.step, optimizer=opt.state_dict(),
                    meta=meta, extra=extra)


def restore_run(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                disc: nn.Module | None, disc_opt: torch.optim.Optimizer | None,
                data: PreparedDataset) -> State:
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("dataset_key") != data.meta["key"]:
        raise HygieError(f"{path}: this run was trained on another dataset "
                         f"({ckpt.meta.get('dataset')}); resume it with that dataset.")
    unwrap(model).load_state_dict(ckpt.model.state_dict())
    if ckpt.optimizer:
        opt.load_state_dict(ckpt.optimizer)
    if disc is not None and disc_opt is not None and "disc" in ckpt.extra:
        disc.load_state_dict(ckpt.extra["disc"])
        disc_opt.load_state_dict(ckpt.extra["disc_opt"])
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


def _datasets(data: PreparedDataset, config: TrainConfig
              ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    cls = MouthCropDataset if config.arch == "film_unet" else GeneratorDataset
    train_seed, val_seed = data_seeds(config)
    return (cls(data, "train", length=10**9, seed=train_seed),
            cls(data, "val", length=10**9, seed=val_seed))


def _autocast(device: torch.device):  # type: ignore[no-untyped-def]
    """Mixed precision on the GPU (bf16 where supported); plain fp32 on the CPU."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _eval_and_keep_best(model, val_set, config, state, expert, device, run, opt, data,
                        disc, disc_opt, notes) -> dict[str, float]:  # type: ignore[no-untyped-def]
    val = evaluate(model, val_set, config, state, expert, device)
    if expert is not None and not state.sync_on and val.get("sync", 1.0) < config.sync_threshold:
        state.sync_on = True  # the official rule: lip-sync loss once outputs sync well enough
        notes.append(f"step {state.step}: sync loss switched on (val sync {val['sync']:.3f})")
    if val["mouth_l1"] < state.best_val:
        state.best_val = val["mouth_l1"]
        save_run(run.best, model, config.arch, opt, state, config, data, disc, disc_opt)
    return val


def train_generator(dataset: str | Path, out: str | Path, config: TrainConfig,
                    resume: bool = False) -> TrainSummary:
    # Set-up: device, threads, process group, seed.
    device = start_run(config)
    data = PreparedDataset(dataset)
    train_set, val_set = _datasets(data, config)
    # Models: the generator, the frozen expert, the optional discriminator.
    model, init_note, pretrained = build_generator(config, data)
    model = model.to(device).train()
    expert, expert_note = load_expert(config, device)
    disc, disc_note = build_disc(config, device)
    notes = [f"{config.arch} {init_note}", expert_note, disc_note]
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.999))
    disc_opt = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999)) \
        if disc is not None else None
    run = RunDir(out, config, resume, LOG_FIELDS)
    state = State(sync_on=pretrained and expert is not None)
    if resume:
        state = restore_run(run.last, model, opt, disc, disc_opt, data)
        notes.append(f"resumed at step {state.step}")
    if torch.distributed.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(model)
    if is_main():
        print("\n".join(notes))
    # One loop: step, evaluate, checkpoint, preview, log.
    start_step, started = state.step, time.perf_counter()
    bar = tqdm(total=config.steps, initial=state.step, desc="train", unit="step",
               disable=not is_main() or None)
    try:
        for batch in batches(train_set, config.batch_size, state.step, config.steps,
                             config.num_workers):
            with _autocast(device):
                terms = generator_losses(forward(model, to_device(batch, device), config.arch),
                                         config, state, expert, disc)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            values = {k: float(v.detach()) for k, v in terms.items()}
            if disc is not None and disc_opt is not None:
                values["disc"] = disc_step(disc, disc_opt, forward(
                    model, to_device(batch, device), config.arch))
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}", mouth=f"{values['mouth_l1']:.4f}")
            run.log(state.step, "train", {**values, "sync_on": float(state.sync_on),
                                          "lr": config.lr,
                                          "seconds": time.perf_counter() - started})
            if state.step % config.eval_every == 0 or state.step == config.steps:
                val = _eval_and_keep_best(model, val_set, config, state, expert, device, run,
                                          opt, data, disc, disc_opt, notes)
                run.log(state.step, "val", val)
            if state.step % config.checkpoint_every == 0 or state.step == config.steps:
                save_run(run.last, model, config.arch, opt, state, config, data, disc, disc_opt)
            if is_main() and state.step % config.preview_every == 0:
                save_preview(unwrap(model), val_set, config,
                             run.path / "previews" / f"step_{state.step:07d}.png", device)
    except KeyboardInterrupt:
        save_run(run.last, model, config.arch, opt, state, config, data, disc, disc_opt)
        bar.close()
        raise
    bar.close()
    done = max(state.step - start_step, 1)
    return TrainSummary(run.path, state.step, state.best_val, notes,
                        (time.perf_counter() - started) / done)
