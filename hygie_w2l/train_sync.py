"""``hygie-w2l train-sync``: fine-tune the SyncNet_color lip-sync expert on one person.

From the official ``lipsync_expert.pth`` when present, else from scratch (it says which).
BCE on the cosine similarity of in-sync vs off-sync pairs (off-sync audio is drawn at least a
sync window away), validation loss and accuracy on the held-out split, early stopping, the
best checkpoint kept.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from hygie_w2l.dataset import PreparedDataset, SyncDataset
from hygie_w2l.losses import cosine_bce
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
from hygie_w2l.weights import EXPERT_FILE, official_path

OFFICIAL_EXPERT = official_path(EXPERT_FILE)


@dataclasses.dataclass(frozen=True)
class SyncSummary:
    run: Path
    steps: int
    best_val_loss: float
    best_val_accuracy: float
    init: str
    stopped_early: bool


def init_expert(config: TrainConfig) -> tuple[nn.Module, str]:
    if config.init and config.init != "scratch":
        return load_checkpoint(config.init, expect="syncnet_color").model, f"from {config.init}"
    if config.init is None and OFFICIAL_EXPERT.exists():
        return load_checkpoint(OFFICIAL_EXPERT, expect="syncnet_color").model, \
            f"from the official {OFFICIAL_EXPERT}"
    return build_model("syncnet_color"), "from scratch (no official lipsync_expert.pth)"


def _step(model: nn.Module, batch: list[torch.Tensor], device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    faces, mel, label = (t.to(device) for t in batch)
    audio_emb, face_emb = model(mel, faces)
    loss, sim = cosine_bce(audio_emb, face_emb, label)
    correct = ((sim > 0.5) == (label[:, 0] > 0.5)).float().mean()
    return loss, correct, sim


@torch.no_grad()
def evaluate_expert(model: nn.Module, val_set: SyncDataset, config: TrainConfig,
                    device: torch.device) -> dict[str, float]:
    model.eval()
    loss = acc = 0.0
    for batch in batches(val_set, config.batch_size, 0, config.eval_batches):
        step_loss, correct, _ = _step(model, batch, device)
        loss, acc = loss + float(step_loss), acc + float(correct)
    model.train()
    return {"loss": all_reduce_mean(loss / config.eval_batches),
            "accuracy": all_reduce_mean(acc / config.eval_batches)}


def _save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int,
          best: tuple[float, float], stale: int, config: TrainConfig,
          data: PreparedDataset) -> None:
    if is_main():
        save_checkpoint(path, unwrap(model),
                        "syncnet_color", step=step, optimizer=opt.state_dict(),
                        meta={"kind": "expert", "dataset": str(data.root),
                              "dataset_key": data.meta["key"],
                              "train_config": dataclasses.asdict(config)},
                        extra={"rng": torch.get_rng_state(), "best_loss": best[0],
                               "best_accuracy": best[1], "stale_evals": stale})


def _restore(path: Path, model: nn.Module, opt: torch.optim.Optimizer
             ) -> tuple[int, tuple[float, float], int]:
    """Weights, optimiser and RNG from ``last.pt``; (step, (best loss, accuracy), stale)."""
    ckpt = load_checkpoint(path, expect="syncnet_color")
    model.load_state_dict(ckpt.model.state_dict())
    opt.load_state_dict(ckpt.optimizer or {})
    torch.set_rng_state(ckpt.extra["rng"])
    best = (float(ckpt.extra["best_loss"]), float(ckpt.extra["best_accuracy"]))
    return ckpt.step, best, int(ckpt.extra["stale_evals"])


def train_sync(dataset: str | Path, out: str | Path, config: TrainConfig,
               resume: bool = False) -> SyncSummary:
    # Set-up, data, model, optimiser.
    device = start_run(config)
    data = PreparedDataset(dataset)
    train_seed, val_seed = data_seeds(config)
    train_set = SyncDataset(data, "train", length=10**9, seed=train_seed)
    val_set = SyncDataset(data, "val", length=10**9, seed=val_seed)
    model, init_note = init_expert(config)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    run = RunDir(out, config, resume, ["loss", "accuracy"], (dataset,))
    step, best, stale = _restore(run.last, model, opt) if resume else (0, (math.inf, 0.0), 0)
    if resume:
        run.rewind_log(step)
    if torch.distributed.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(model)
    if is_main():
        print(f"expert {init_note}")
    # One loop: step, evaluate (keep the best, stop when it no longer improves), checkpoint.
    started, stopped = time.perf_counter(), False
    bar = tqdm(total=config.steps, initial=step, desc="train-sync", unit="step",
               disable=not is_main() or None)

    def save_last() -> None:  # at the step the loop has reached
        _save(run.last, model, opt, step, best, stale, config, data)

    with training_loop(run, save_last, bar) as stop:
        for batch in batches(train_set, config.batch_size, step, config.steps):
            loss, correct, _ = _step(model, batch, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", acc=f"{float(correct):.2f}")
            run.log(step, "train", {"loss": float(loss.detach()), "accuracy": float(correct),
                                    "lr": config.lr, "seconds": time.perf_counter() - started})
            if step % config.eval_every == 0 or step == config.steps:
                val = evaluate_expert(model, val_set, config, device)
                run.log(step, "val", val)
                bar.write(f"step {step}: val loss {val['loss']:.4f}, "
                          f"accuracy {val['accuracy']:.3f}")
                if val["loss"] < best[0]:
                    best, stale = (val["loss"], val["accuracy"]), 0
                    _save(run.best, model, opt, step, best, stale, config, data)
                else:
                    stale += 1
                stopped = stale >= config.patience
            if step % config.checkpoint_every == 0 or step == config.steps or stopped:
                _save(run.last, model, opt, step, best, stale, config, data)
            if stopped:
                bar.write(f"early stop: no better validation loss in {stale} evaluations")
                break
            stop.check()
    return SyncSummary(run.path, step, best[0], best[1], init_note, stopped)
