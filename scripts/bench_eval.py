#!/usr/bin/env python3
"""Quality after the `quick` preset, measured by `hygie-w2l eval`: for the synthetic fixture
and the real clip talk_selfie_24s.mp4 ($HYGIE_TEST_DATA): prepare -> train (film-unet, quick)
-> index (training split) -> eval on the held-out split with and without HD retrieval.
Prints each table and writes bench_out/eval_NAME.json. BENCH_EVAL_RUN=folder keeps the work
(re-running resumes it); BENCH_EVAL_STEPS=N shortens training.
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


def journey(name: str, video: Path, work: Path, steps: str | None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    seconds = {"prepare": run("prepare", str(video), "--out", str(work / "dataset"))}
    resume = ["--resume"] if (work / "run" / "last.pt").is_file() else []
    seconds["train"] = run("train", str(work / "dataset"), "--out", str(work / "run"),
                           "--arch", "film-unet", "--preset", "quick", "--device", "cpu",
                           *(["--steps", steps] if steps else []), *resume)
    seconds["index"] = run("index", str(work / "dataset"), "--out", str(work / "retrieval"))
    seconds["eval"] = run("eval", str(work / "dataset"), "--checkpoint", str(work / "run"),
                          "--index", str(work / "retrieval"), "--out", str(work / "report"))
    metrics = json.loads((work / "report" / "metrics.json").read_text())
    metrics["step_seconds"] = seconds
    return metrics


def main() -> int:
    data = Path(os.environ.get("HYGIE_TEST_DATA", ROOT.parent / "shared" / "data"))
    work = Path(os.environ.get("BENCH_EVAL_RUN", ROOT / "bench_out" / "eval_work"))
    steps = os.environ.get("BENCH_EVAL_STEPS")
    synth = work / "synthetic.mp4"
    if not synth.exists():
        work.mkdir(parents=True, exist_ok=True)
        run("synth", "--seconds", "20", "--seed", "0", "--out", str(synth))
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    for name, video in [("synthetic", synth), ("talk_selfie_24s", data / "talk_selfie_24s.mp4")]:
        if not video.exists():
            print(f"skipping {name}: {video} not found")
            continue
        metrics = journey(name, video, work / name, steps)
        (out / f"eval_{name}.json").write_text(json.dumps(metrics, indent=1))
        print(f"\n== {name}: held-out frames {metrics['frames']}, steps "
              f"{ {k: round(v, 1) for k, v in metrics['step_seconds'].items()} }")
        print((work / name / "report" / "report.md").read_text().split("\n\n")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
