#!/usr/bin/env python3
"""Render speed on the 720p clip talk_selfie_24s.mp4 with its own audio: per-stage frames/s
and peak memory, for the torch and ONNX engines (and static INT8 for Wav2Lip), Wav2Lip
(official layout, random weights: speed does not depend on the values) and the FiLM U-Net.
Each render runs in its own process so that peak memory is its own. The ONNX export (and
INT8 calibration) happens once per checkpoint and is cached: a one-second render fills the
cache first and its time is reported apart. Writes bench_out/render.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hygie_w2l.models.checkpoint import build_model, save_checkpoint, save_official_layout


def main() -> None:
    data = Path(os.environ.get("HYGIE_TEST_DATA", "../shared/data"))
    clip = data / "talk_selfie_24s.mp4"
    if not clip.exists():
        print(f"skipped: {clip} not found (set HYGIE_TEST_DATA)")
        return
    frames = int(os.environ.get("BENCH_RENDER_SECONDS", "8")) * 25
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        speech = tmp / "speech.wav"
        subprocess.run([sys.executable, "-m", "hygie_w2l.cli", "info", str(clip)], check=True,
                       capture_output=True)
        from hygie_w2l.media import run_ffmpeg

        run_ffmpeg(["-v", "error", "-i", str(clip), "-t", str(frames / 25), "-vn", "-y",
                    str(speech)], "cut the audio")
        torch.manual_seed(0)
        ckpts = {"wav2lip": save_official_layout(tmp / "w.pth", build_model("wav2lip")),
                 "film-unet": save_checkpoint(tmp / "f.pt", build_model("film_unet"),
                                              "film_unet")}
        run_ffmpeg(["-v", "error", "-i", str(speech), "-t", "1", "-y", str(tmp / "1s.wav")],
                   "cut the audio")
        env = {**os.environ, "HYGIE_CACHE": str(tmp / "cache")}
        engines = {"torch": [], "onnx": ["--engine", "onnx"],
                   "onnx-int8": ["--engine", "onnx", "--int8"]}
        for arch, ckpt in ckpts.items():
            for engine, flags in engines.items():
                if engine == "onnx-int8" and arch != "wav2lip":
                    continue  # INT8 is for Wav2Lip (export.py says why)

                def render(audio: Path, stats: Path, flags: list[str] = flags,
                           ckpt: Path = ckpt) -> subprocess.CompletedProcess[str]:
                    return subprocess.run(
                        [sys.executable, "-m", "hygie_w2l.cli", "render", "--face", str(clip),
                         "--audio", str(audio), "--checkpoint", str(ckpt), "--out",
                         str(tmp / "out.mp4"), "--stats", str(stats), *flags],
                        capture_output=True, text=True, env=env)

                warm = None
                if engine != "torch":
                    started = time.perf_counter()
                    render(tmp / "1s.wav", tmp / "warm.json")
                    warm = time.perf_counter() - started
                stats = tmp / f"{arch}-{engine}.json"
                run = render(speech, stats)
                if run.returncode != 0:
                    print(f"{arch} {engine}: failed\n{run.stderr[-1500:]}")
                    continue
                s = json.loads(stats.read_text())
                results.append({"arch": arch, "engine": engine, "first_render_1s_s": warm, **s})
                if warm is not None:
                    print(f"{arch:9s} {engine}: export (+ calibration) and a 1-s render "
                          f"took {warm:.1f} s once")
                per = ", ".join(f"{k} {s['n_frames'] / max(v, 1e-9):.0f}"
                                for k, v in s["stage_seconds"].items())
                print(f"{arch:9s} {engine:9s} end-to-end {s['frames_per_s']:.1f} frames/s, "
                      f"peak {s['peak_memory_mb']:.0f} MB; per stage frames/s: {per}",
                      flush=True)
    out = Path("bench_out/render.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
