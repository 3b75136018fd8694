#!/usr/bin/env python3
"""Training cost and what a fixed budget buys, on this machine.

1. seconds per step of each architecture (film-unet quick and standard widths, Wav2Lip with
   and without the expert, the expert itself) on the synthetic fixture;
2. on the real clip talk_selfie_24s.mp4 ($HYGIE_TEST_DATA): prepare, then a film-unet
   trained for --steps steps; held-out mouth L1 before/after and the correlation of the
   generated mouth opening with the real one (MediaPipe on pasted frames).
Writes bench_out/train.json; never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.evaluate import held_out_openings
from hygie_w2l.fixtures import FixtureConfig, write_fixture
from hygie_w2l.metrics import pearson
from hygie_w2l.models.checkpoint import build_model, load_checkpoint, save_official_layout
from hygie_w2l.prepare import prepare
from hygie_w2l.runs import resolve_config
from hygie_w2l.train import train_generator
from hygie_w2l.train_sync import train_sync


def seconds_per_step(tmp: Path, dataset: Path) -> list[dict]:
    expert = save_official_layout(tmp / "expert.pth", build_model("syncnet_color"))
    gen = save_official_layout(tmp / "wav2lip.pth", build_model("wav2lip"))
    cases = [
        ("film-unet quick (8..128 ch, 128 px)", "generator",
         {"arch": "film_unet", "init": "scratch", "batch_size": 8}),
        ("film-unet standard (16..256 ch, 128 px)", "generator",
         {"arch": "film_unet", "init": "scratch", "batch_size": 8,
          "film_channels": (16, 32, 64, 128, 256)}),
        ("wav2lip + expert, batch 4x5 frames", "generator",
         {"arch": "wav2lip", "init": str(gen), "expert": str(expert), "batch_size": 4}),
        ("expert (SyncNet_color), batch 16", "expert",
         {"arch": "syncnet_color", "init": "scratch", "batch_size": 16}),
    ]
    rows = []
    for name, kind, over in cases:
        steps = 6
        config = resolve_config(kind, "quick", {"device": "auto", "steps": steps,
                                                "eval_every": 10**6, "checkpoint_every": 10**6,
                                                "preview_every": 10**6, **over})
        out = tmp / name.split()[0] / str(time.time())
        fn = train_sync if kind == "expert" else train_generator
        fn(dataset, out, config)
        # steady state: from the end of step 1 to the end of the last step (log.csv)
        log = [r.split(",") for r in (out / "log.csv").read_text().splitlines()[1:]]
        seconds = [float(r[-1]) for r in log if r[1] == "train"]
        rows.append({"case": name,
                     "seconds_per_step": (seconds[-1] - seconds[0]) / (len(seconds) - 1)})
        print(f"{name}: {rows[-1]['seconds_per_step']:.2f} s/step", flush=True)
    return rows


def fixed_budget(tmp: Path, clip: Path, steps: int) -> dict:
    start = time.perf_counter()
    ds = tmp / "selfie"
    prepare(clip, ds)
    prep_s = time.perf_counter() - start
    config = resolve_config("generator", "quick", {"arch": "film_unet", "init": "scratch",
                                                   "steps": steps, "eval_every": steps // 4,
                                                   "checkpoint_every": steps})
    start = time.perf_counter()
    summary = train_generator(ds, tmp / "selfie_run", config)
    train_s = time.perf_counter() - start
    log = [r.split(",") for r in (tmp / "selfie_run" / "log.csv").read_text().splitlines()]
    header = log[0]
    val = [dict(zip(header, r, strict=True)) for r in log[1:] if r[1] == "val"]
    data = PreparedDataset(ds)
    frames = list(range(*data.split.val))
    gen, real = held_out_openings(load_checkpoint(tmp / "selfie_run"), data, clip, frames)
    return {"clip": clip.name, "prepare_s": prep_s, "steps": steps, "train_s": train_s,
            "val_mouth_l1_curve": [(int(v["step"]), float(v["mouth_l1"])) for v in val],
            "best_val_mouth_l1": summary.best_val,
            "opening_r_generated_vs_real": pearson(gen, real),
            "opening_std_generated": float(np.nanstd(gen)), "opening_std_real":
                float(np.nanstd(real))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400, help="budget on the real clip")
    parser.add_argument("--out", type=Path, default=Path("bench_out/train.json"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict = {"device": device, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "synth.mp4"
        write_fixture(clip, FixtureConfig(seconds=8.0))
        prepare(clip, tmp / "synth_ds")
        result["seconds_per_step"] = seconds_per_step(tmp, tmp / "synth_ds")
        data = Path(os.environ.get("HYGIE_TEST_DATA", "../shared/data"))
        if (data / "talk_selfie_24s.mp4").exists():
            result["selfie"] = fixed_budget(tmp, data / "talk_selfie_24s.mp4", args.steps)
            print(json.dumps(result["selfie"], indent=1))
        else:
            print(f"skipped the real clip: {data} not found (set HYGIE_TEST_DATA)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
