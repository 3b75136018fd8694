#!/usr/bin/env python3
"""Quality of each path on real footage, measured by `hygie-w2l eval` on the held-out split:
for the synthetic fixture, talk_selfie_24s.mp4 and talk_sun_22s.mp4 (+ its wav; a small
face, reported even where it fails) of $HYGIE_TEST_DATA: prepare -> index (training split)
-> train the FiLM U-Net (quick preset) and the lips model -> eval each (the FiLM U-Net with
and without HD retrieval). Prints one table per clip (template floor, FiLM U-Net, FiLM U-Net
+ HD, lips path, real ceiling: opening r, LMD, sharpness and flicker relative to the real
video, training time) and writes bench_out/eval_NAME.json.
BENCH_EVAL_RUN=folder keeps the work (re-running resumes it); BENCH_EVAL_STEPS=N shortens
the FiLM U-Net's training; BENCH_EVAL_CLIPS=a,b picks clips; BENCH_EVAL_ARCHS=lips skips
the FiLM U-Net.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = [sys.executable, "-m", "hygie_w2l.cli"]


def run(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([*BIN, *args], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def journey(video: Path, audio: Path | None, work: Path, steps: str | None,
            archs: list[str]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    ds, lib = work / "dataset", work / "retrieval"
    seconds = {"prepare": run("prepare", str(video), *(["--audio", str(audio)] if audio else []),
                              "--out", str(ds)),
               "index": run("index", str(ds), "--out", str(lib))}
    rows: dict[str, dict] = {}
    for arch in archs:
        out = work / arch
        resume = ["--resume"] if (out / "last.pt").is_file() else []
        seconds[f"train {arch}"] = run(
            "train", str(ds), "--out", str(out), "--arch", arch, "--preset", "quick",
            "--device", "cpu", *(["--steps", steps] if steps and arch != "lips" else []),
            *resume)
        seconds[f"eval {arch}"] = run("eval", str(ds), "--checkpoint", str(out), "--index",
                                      str(lib), "--out", str(work / f"report_{arch}"))
        metrics = json.loads((work / f"report_{arch}" / "metrics.json").read_text())
        for name, row in metrics["variants"].items():
            label = {"generated": arch, "generated+hd": f"{arch} + HD"}.get(name, name)
            rows[label] = row
    return {"rows": rows, "seconds": seconds}


def table(result: dict) -> str:
    cols = [("opening_r", "opening r", "{:.3f}"), ("lmd", "LMD", "{:.4f}"),
            ("sharpness_rel", "sharpness / real", "{:.3f}"),
            ("flicker_rel", "flicker / real", "{:.3f}"), ("opening_std", "opening std", "{:.3f}")]
    lines = ["| variant | " + " | ".join(c[1] for c in cols) + " | training |",
             "|---" * (len(cols) + 2) + "|"]
    order = ["template", "film-unet", "film-unet + HD", "lips", "real"]
    for name in sorted(result["rows"], key=lambda n: order.index(n) if n in order else 9):
        row = result["rows"][name]
        cells = [f.format(row[k]) if row[k] is not None else "n/a" for k, _, f in cols]
        train = result["seconds"].get(f"train {name}")
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + (f"{train:.0f} s" if train else "") + " |")
    return "\n".join(lines)


def main() -> int:
    data = Path(os.environ.get("HYGIE_TEST_DATA", ROOT.parent / "shared" / "data"))
    work = Path(os.environ.get("BENCH_EVAL_RUN", ROOT / "bench_out" / "eval_work"))
    steps = os.environ.get("BENCH_EVAL_STEPS")
    archs = os.environ.get("BENCH_EVAL_ARCHS", "film-unet,lips").split(",")
    synth = work / "synthetic.mp4"
    if not synth.exists():
        work.mkdir(parents=True, exist_ok=True)
        run("synth", "--seconds", "20", "--seed", "0", "--out", str(synth))
    clips = {"synthetic": (synth, None),
             "talk_selfie_24s": (data / "talk_selfie_24s.mp4", None),
             "talk_sun_22s": (data / "talk_sun_22s.mp4", data / "talk_sun_22s.wav")}
    wanted = os.environ.get("BENCH_EVAL_CLIPS", ",".join(clips)).split(",")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    for name in wanted:
        video, audio = clips[name]
        if not video.exists():
            print(f"skipping {name}: {video} not found")
            continue
        result = journey(video, audio, work / name, steps, archs)
        (out / f"eval_{name}.json").write_text(json.dumps(result, indent=1))
        print(f"\n== {name}: step seconds "
              f"{ {k: round(v, 1) for k, v in result['seconds'].items()} }")
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
