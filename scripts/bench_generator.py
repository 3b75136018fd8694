#!/usr/bin/env python3
"""Generator throughput on this machine: PyTorch vs ONNX Runtime fp32 vs INT8, batch 1 and 16,
plus FLOPs per frame of each architecture. Prints a markdown table and writes JSON.

    .venv/bin/python scripts/bench_generator.py [--out bench_out/generator.json] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hygie_w2l.export import export_generator, fold_batchnorm
from hygie_w2l.generators import generator_class
from hygie_w2l.generators.base import PixelGenerator
from hygie_w2l.types import GENERATOR_ARCHS


def frames_per_s(step: Callable[[], object], batch: int, seconds: float) -> float:
    step()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - start)


def flops_per_frame(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops() / inputs[0].shape[0]


def bench_arch(arch: str, seconds: float, tmp: Path) -> list[dict]:
    import onnxruntime as ort

    cls = generator_class(arch)
    model = cls.build_model().eval()
    generator = cls.of_model(model)
    folded = fold_batchnorm(model)  # what render runs
    # INT8 (static, where allowed) calibrated on random inputs: speed does not depend on it.
    report = export_generator(model, generator, tmp / f"{arch}.onnx",
                              int8=generator.int8_refusal is None)
    onnx_models = {"onnx fp32": report.path}
    if report.int8_path is not None:
        onnx_models["onnx int8"] = report.int8_path
    rows = []
    for batch in (1, 8):
        inputs = generator.example_inputs(batch)
        with torch.no_grad():
            torch_fps = frames_per_s(lambda x=inputs: folded(*x), batch, seconds)
        engines = {"torch fp32": torch_fps}
        for name, path in onnx_models.items():
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)}
            engines[name] = frames_per_s(lambda s=sess, f=feeds: s.run(None, f), batch, seconds)
        for engine, fps in engines.items():
            rows.append({"arch": arch, "batch": batch, "engine": engine, "frames_per_s": fps})
    gflops = flops_per_frame(model, generator.example_inputs(1)) / 1e9
    for row in rows:
        row["gflops_per_frame"] = gflops
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench_out/generator.json"))
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for arch in GENERATOR_ARCHS  # the pixel generators (lips has no network)
                if issubclass(generator_class(arch), PixelGenerator)
                for r in bench_arch(arch, args.seconds, Path(tmp))]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"generator throughput on {machine}, torch {torch.__version__}")
    print("| arch | GFLOPs/frame | batch | engine | frames/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['gflops_per_frame']:.2f} | {r['batch']} | {r['engine']} | "
              f"{r['frames_per_s']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
