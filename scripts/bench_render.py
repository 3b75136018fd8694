#!/usr/bin/env python3
"""Render speed against the floor of any render: a plain transcode of the same frames.

In one run, on one clip (default: the first 8 s of talk_selfie_24s.mp4, 720p, with its own
audio), this times
  * a plain transcode: ffmpeg decodes the clip's frames at 25 fps and x264 encodes them
    (same length, CRF and preset as a render; no audio), the best of three;
  * each generator/engine render, with a cold template cache (tracked) and then a warm
    one (tracking read back), each in its own process so peak memory is its own; the warm
    render --pairs times (default 3), each right after a plain transcode of its own, its
    ratio to that one (this machine's speed drifts by up to 40 % within an hour: a ratio
    to a transcode timed minutes earlier measured the drift as much as the render), the
    median pair and the range printed:
    the lips path (a lips run and its library: given, or built from the clip in seconds),
    the FiLM U-Net (torch, ONNX) and Wav2Lip (torch, ONNX, ONNX INT8), the last two with
    random weights (speed does not depend on the values). The ONNX export (and the INT8
    calibration) happens once per checkpoint and is cached by a one-second render first.

Every render's wall time is printed as a ratio to the plain transcode: "render" is the
render's own time (from reading the inputs to the muxed file), "process" adds the start of
Python and its imports. --clip-height 1080 / 2160 upscales the clip first (Lanczos) to
measure 1080p and 4K. Writes bench_out/render[-HEIGHT].json.

    python scripts/bench_render.py [--seconds 8] [--only lips,film-unet/torch]
        [--lips-run RUN --index LIB] [--clip-height 2160] [--sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hygie_w2l.doctor import cpu_seconds
from hygie_w2l.media import DEFAULT_CRF, DEFAULT_PRESET, ffmpeg_exe, run_ffmpeg
from hygie_w2l.models.checkpoint import build_model, save_checkpoint, save_official_layout
from hygie_w2l.pixels import PixelFormat

CLI = [sys.executable, "-m", "hygie_w2l.cli"]
ENGINES = {"torch": [], "onnx": ["--engine", "onnx"], "onnx-int8": ["--engine", "onnx", "--int8"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clip-height", type=int, default=0, help="upscale the clip to this height")
    p.add_argument("--only", default="", help="comma-separated: lips, film-unet/onnx, ...")
    p.add_argument("--lips-run", type=Path, help="a lips run of the clip's person")
    p.add_argument("--index", type=Path, help="the library of that person")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--pairs", type=int, default=3,
                   help="warm renders, each paired with a plain transcode timed just before")
    p.add_argument("--sequential", action="store_true", help="renders with --sequential")
    p.add_argument("--extra", default="", help="more render flags, space-separated")
    args = p.parse_args()
    data = Path(os.environ.get("HYGIE_TEST_DATA", "../shared/data"))
    clip = args.clip or data / "talk_selfie_24s.mp4"
    if not clip.exists():
        print(f"skipped: {clip} not found (set HYGIE_TEST_DATA or give --clip)")
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bench = Bench(tmp, args)
        where = machine()
        print(f"machine: {where}", flush=True)
        clip = bench.template(clip)
        speech = bench.speech(clip)
        floor, floor_cpu = bench.transcode(clip)
        piped = {fmt: bench.piped(clip, fmt) for fmt in ("bgr24", "yuv420p")}
        print(f"{clip.name}: plain transcode of {bench.n_frames} frames (x264 {args.preset}, "
              f"CRF {DEFAULT_CRF}): {floor:.2f} s, {bench.n_frames / floor:.0f} frames/s, "
              f"{floor_cpu:.2f} CPU-s; "
              f"the same through our pipes (decoded in Python, piped to our writer): "
              f"as BGR {piped['bgr24']:.2f} s ({piped['bgr24'] / floor:.2f}x), as I420 "
              f"{piped['yuv420p']:.2f} s ({piped['yuv420p'] / floor:.2f}x)", flush=True)
        results: list[dict[str, Any]] = [{"name": "machine", "machine": where},
                                          {"name": "plain transcode", "wall_s": floor,
                                           "cpu_s": floor_cpu}]
        results += [{"name": f"through our pipes ({fmt})", "wall_s": s}
                    for fmt, s in piped.items()]
        for name, ckpt, flags in bench.configurations(clip):
            results += bench.measure(name, clip, speech, ckpt, flags, floor)
    suffix = f"-{args.clip_height}" if args.clip_height else ""
    out = Path(f"bench_out/render{suffix}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


def machine() -> str:
    """Where the numbers come from: cores, processor and the device the torch engine uses
    (results from different machines are not comparable)."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "") if Path("/proc/cpuinfo").exists() else ""
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({cpu or platform.processor() or platform.machine()}), "
            f"{gpu}, torch {torch.__version__}")


class Bench:
    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp, self.args = tmp, args
        self.n_frames = round(args.seconds * 25)
        # Python's default: modules compiled once (this sandbox sets PYTHONDONTWRITEBYTECODE,
        # which makes every render compile what it imports lazily, as no user's would)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["HYGIE_CACHE"] = str(tmp / "cache")
        self.only = {s for s in args.only.split(",") if s}

    def template(self, clip: Path) -> Path:
        """The clip, upscaled to --clip-height when asked."""
        if not self.args.clip_height:
            return clip
        out = self.tmp / f"{clip.stem}_{self.args.clip_height}p.mp4"
        run_ffmpeg(["-v", "error", "-i", str(clip), "-t", f"{self.args.seconds + 1:g}",
                    "-vf", f"scale=-2:{self.args.clip_height}:flags=lanczos", "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "17", "-c:a", "copy", "-y", str(out)],
                   "upscale the clip")
        return out

    def speech(self, clip: Path) -> Path:
        out = self.tmp / "speech.wav"
        run_ffmpeg(["-v", "error", "-i", str(clip), "-t", f"{self.args.seconds:g}", "-vn", "-y",
                    str(out)], "cut the audio")
        run_ffmpeg(["-v", "error", "-i", str(out), "-t", "1", "-y", str(self.tmp / "1s.wav")],
                   "cut the audio")
        return out

    def transcode(self, clip: Path, runs: int = 3) -> tuple[float, float]:
        """The best of ``runs`` plain transcodes of the frames a render shows, and the CPU
        seconds one of them used."""
        times, cpu = [], cpu_seconds()[1]
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(clip),
                            "-frames:v", str(self.n_frames), "-vf", "fps=25", "-an",
                            "-c:v", "libx264", "-preset", self.args.preset,
                            "-crf", str(DEFAULT_CRF), "-pix_fmt", "yuv420p", "-y",
                            str(self.tmp / "plain.mp4")], check=True)
            times.append(time.perf_counter() - started)
        return min(times), (cpu_seconds()[1] - cpu) / runs

    def piped(self, clip: Path, pix_fmt: PixelFormat) -> float:
        """The floor of anything that edits frames in Python: our reader to our writer, the
        frames held as BGR (the image generators) or I420 (the lips path: pixels.py)."""
        from hygie_w2l.media import VideoWriter, probe, read_frames

        info = probe(clip)
        started = time.perf_counter()
        writer = VideoWriter(self.tmp / "piped.mp4", info.width, info.height, 25.0,
                             DEFAULT_CRF, self.args.preset, pix_fmt)
        for n, frame in enumerate(read_frames(clip, fps=25.0, info=info, pix_fmt=pix_fmt)):
            if n == self.n_frames:
                break
            writer.write(frame)
        writer.close()
        return time.perf_counter() - started

    def configurations(self, clip: Path) -> list[tuple[str, Path, list[str]]]:
        out = []
        if self._wanted("lips"):
            run, index = self._lips(clip)
            out.append(("lips", run, ["--index", str(index)]))
        torch.manual_seed(0)
        ckpts = {"film-unet": lambda: save_checkpoint(self.tmp / "f.pt",
                                                      build_model("film_unet"), "film_unet"),
                 "wav2lip": lambda: save_official_layout(self.tmp / "w.pth",
                                                         build_model("wav2lip"))}
        for arch, make in ckpts.items():
            wanted = [e for e in ENGINES if self._wanted(f"{arch}/{e}")
                      and not (e == "onnx-int8" and arch != "wav2lip")]  # export.py: why
            if wanted:
                ckpt = make()
                out += [(f"{arch}/{e}", ckpt, ENGINES[e]) for e in wanted]
        return out

    def _wanted(self, name: str) -> bool:
        return not self.only or name in self.only or name.split("/")[0] in self.only

    def _lips(self, clip: Path) -> tuple[Path, Path]:
        """The lips run and library of the clip's person: given, or built from the clip."""
        if self.args.lips_run and self.args.index:
            return self.args.lips_run, self.args.index
        started = time.perf_counter()
        ds, run, index = self.tmp / "ds", self.tmp / "lips", self.tmp / "index"
        for cmd in (["prepare", str(clip), "--out", str(ds)],
                    ["index", str(ds), "--out", str(index)],
                    ["train", str(ds), "--arch", "lips", "--out", str(run)]):
            subprocess.run([*CLI, *cmd], check=True, capture_output=True, env=self.env)
        print(f"lips run and library built from the clip in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        return run, index

    def render(self, clip: Path, audio: Path, ckpt: Path, flags: list[str], stats: Path
               ) -> tuple[subprocess.CompletedProcess[str], float]:
        extra = [*flags, *self.args.extra.split(), "--x264-preset", self.args.preset]
        if self.args.sequential:
            extra.append("--sequential")
        started = time.perf_counter()
        run = subprocess.run([*CLI, "render", "--face", str(clip), "--audio", str(audio),
                              "--checkpoint", str(ckpt), "--out", str(self.tmp / "out.mp4"),
                              "--stats", str(stats), *extra],
                             capture_output=True, text=True, env=self.env)
        return run, time.perf_counter() - started

    def measure(self, name: str, clip: Path, speech: Path, ckpt: Path, flags: list[str],
                floor: float) -> list[dict[str, Any]]:
        if "--engine" in flags:  # export (and calibration) once, cached
            run, seconds = self.render(clip, self.tmp / "1s.wav", ckpt, flags,
                                       self.tmp / "warm.json")
            print(f"{name}: export and a 1-s render took {seconds:.1f} s once", flush=True)
        subprocess.run([*CLI, "cache", "clear", "--kind", "templates"], check=True,
                       capture_output=True, env=self.env)
        rows = []
        for cache in ["cold"] + ["warm"] * self.args.pairs:
            # cold: against the run's floor; warm: each against a transcode timed just before
            transcode = floor if cache == "cold" else self.transcode(clip, runs=1)[0]
            stats = self.tmp / f"{name.replace('/', '-')}-{cache}.json"
            run, process_s = self.render(clip, speech, ckpt, flags, stats)
            if run.returncode != 0:
                print(f"{name} ({cache} cache): failed\n{run.stderr[-1500:]}", flush=True)
                break
            s = json.loads(stats.read_text())
            busy = ", ".join(f"{k} {v:.0%}" for k, v in s["busy_share"].items())
            print(f"{name:18s} {cache} cache: render {s['total_s']:5.2f} s "
                  f"({s['total_s'] / transcode:4.2f}x transcode of {transcode:.2f} s, "
                  f"{s['frames_per_s']:5.1f} frames/s), process {process_s:5.2f} s "
                  f"({process_s / transcode:4.2f}x), peak {s['peak_memory_mb']:.0f} MB; CPU "
                  f"{s['cpu_s']['own']:.2f} s own + {s['cpu_s']['ffmpeg']:.2f} s ffmpeg; busy: "
                  f"{busy}", flush=True)
            rows.append({"name": name, "cache": cache, "process_s": process_s,
                         "transcode_s": transcode, "ratio": s["total_s"] / transcode,
                         "process_ratio": process_s / transcode, **s})
        warm = [r for r in rows if r["cache"] == "warm"]
        if len(warm) > 1:
            print(f"{name:18s} warm, {len(warm)} pairs: {_spread(warm, 'ratio')}x transcode, "
                  f"{_spread(warm, 'frames_per_s', '.1f')} frames/s, process "
                  f"{_spread(warm, 'process_ratio')}x", flush=True)
        return rows


def _spread(rows: list[dict[str, Any]], key: str, fmt: str = ".2f") -> str:
    """The median of ``key`` over ``rows`` and its range: "1.62 (1.55-1.80)"."""
    values = sorted(r[key] for r in rows)
    return (f"{statistics.median(values):{fmt}} ({values[0]:{fmt}}-{values[-1]:{fmt}})")


if __name__ == "__main__":
    main()
