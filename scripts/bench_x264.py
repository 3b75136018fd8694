#!/usr/bin/env python3
"""x264 presets at the default CRF, measured the way a render encodes: the frames of each
real clip (decoded once at 25 fps, up to --seconds) are piped to our VideoWriter with each
preset; the table gives encode time (frames/s), file size (kbit/s) and PSNR of the decoded
result against the frames sent in (dB, over the whole picture). Writes bench_out/x264.json.

    python scripts/bench_x264.py [--seconds 8] [--presets ultrafast,veryfast,medium]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

import numpy as np

from hygie_w2l.media import DEFAULT_CRF, VideoWriter, X264Preset, read_frames

DEFAULT_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def measure(frames: np.ndarray, preset: str, tmp: Path) -> dict[str, Any]:
    n, h, w = frames.shape[:3]
    out = tmp / f"{preset}.mp4"
    started = time.perf_counter()
    writer = VideoWriter(out, w, h, 25.0, DEFAULT_CRF, preset)
    for frame in frames:
        writer.write(frame)
    writer.close()
    seconds = time.perf_counter() - started
    decoded = list(read_frames(out))
    scores = [psnr(a, b) for a, b in zip(frames, decoded, strict=True)]
    return {"preset": preset, "frames_per_s": n / seconds,
            "kbit_per_s": out.stat().st_size * 8 / 1000 / (n / 25.0),
            "psnr_db": float(np.mean(scores))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    args = p.parse_args()
    presets = args.presets.split(",")
    unknown = set(presets) - set(get_args(X264Preset))
    if unknown:
        raise SystemExit(f"unknown presets: {sorted(unknown)}")
    data = Path(os.environ.get("HYGIE_TEST_DATA", "../shared/data"))
    clips = sorted(data.glob("talk_*.mp4"))
    if not clips:
        print(f"skipped: no talk_*.mp4 in {data} (set HYGIE_TEST_DATA)")
        return
    rows = []
    print(f"{'clip':26s}{'preset':11s}{'frames/s':>9s}{'kbit/s':>8s}{'PSNR dB':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            frames = np.stack(list(read_frames(clip, fps=25.0))[:round(args.seconds * 25)])
            for preset in presets:
                r = {"clip": clip.name, "size": f"{frames.shape[2]}x{frames.shape[1]}",
                     **measure(frames, preset, Path(tmp))}
                rows.append(r)
                print(f"{clip.name:26s}{preset:11s}{r['frames_per_s']:9.0f}"
                      f"{r['kbit_per_s']:8.0f}{r['psnr_db']:9.2f}", flush=True)
    print("\nmean over the clips (time and size relative to veryfast where measured):")
    base = {c: r for r in rows for c in [r["clip"]] if r["preset"] == "veryfast"}
    for preset in presets:
        mine = [r for r in rows if r["preset"] == preset]
        line = (f"{preset:11s} {np.mean([r['frames_per_s'] for r in mine]):6.0f} frames/s "
                f"{np.mean([r['kbit_per_s'] for r in mine]):6.0f} kbit/s "
                f"{np.mean([r['psnr_db'] for r in mine]):6.2f} dB")
        if base:
            t = np.mean([base[r["clip"]]["frames_per_s"] / r["frames_per_s"] for r in mine])
            s = np.mean([r["kbit_per_s"] / base[r["clip"]]["kbit_per_s"] for r in mine])
            line += f"  time x{t:.2f}, size x{s:.2f}"
        print(line)
    out = Path("bench_out/x264.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
