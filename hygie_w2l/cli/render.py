"""``hygie-w2l render``'s flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from hygie_w2l.cli.args import DEVICES, default, float_in, int_at_least, int_in
from hygie_w2l.cli.person import face_index_flag


def _cmd_render(args: argparse.Namespace) -> int:
    from hygie_w2l.face_tracker import TrackerConfig
    from hygie_w2l.hd import HDConfig
    from hygie_w2l.render import RenderConfig, render, runs_without_torch
    from hygie_w2l.types import EngineConfig

    hd = HDConfig(strength=args.hd_strength, lips=args.hd_lips, query=args.hd_query) \
        if args.hd_retrieval else None
    engine = EngineConfig(device=args.device, engine=args.engine, int8=args.int8,
                          batch_size=args.batch_size, threads=args.threads)
    config = RenderConfig(blend=args.blend, loop=args.loop, start_s=args.start, crf=args.crf,
                          preset=args.x264_preset, engine=engine, silence_db=args.silence_db,
                          preview=args.preview, hd=hd, index=args.index,
                          tracker=TrackerConfig(face_index=args.face_index),
                          template_cache=not args.no_cache, parallel=not args.sequential)
    if not runs_without_torch(args.checkpoint, engine):
        # torch's import (1.5-3 s) before the render's clock, which has always counted the
        # render's own work, not Python's imports (--stats, bench_render's "process" has them)
        import torch  # noqa: F401

        import hygie_w2l.generate  # noqa: F401
        import hygie_w2l.models.checkpoint  # noqa: F401
        from hygie_w2l.generators import GENERATORS, generator_class

        for arch in GENERATORS:
            generator_class(arch)
    summary = render(args.face, args.audio, args.checkpoint, args.out, config, args.stats)
    print(summary.table())
    print(f"wrote {summary.out}" + (f" and {summary.preview}" if summary.preview else ""))
    return 0


def add_render(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.blend import BlendMode
    from hygie_w2l.hd import HDConfig, HDQuery
    from hygie_w2l.media import X264Preset
    from hygie_w2l.render import RenderConfig
    from hygie_w2l.template import LoopMode
    from hygie_w2l.types import EngineConfig, EngineKind

    p.add_argument("--face", required=True, type=Path, help="template video or photo")
    face_index_flag(p)
    p.add_argument("--audio", required=True, type=Path, help="speech, any format")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="our checkpoint or run folder, or an official Wav2Lip file")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--blend", choices=get_args(BlendMode),
                   default=default(RenderConfig, "blend"))
    p.add_argument("--loop", choices=get_args(LoopMode), default=default(RenderConfig, "loop"),
                   help="when the audio outlasts the template")
    p.add_argument("--start", type=float_in(0.0, 1e9), default=default(RenderConfig, "start_s"),
                   help="offset into the template (s)")
    p.add_argument("--crf", type=int_in(0, 51), default=default(RenderConfig, "crf"),
                   help="x264 quality (lower is better)")
    p.add_argument("--x264-preset", choices=get_args(X264Preset),
                   default=default(RenderConfig, "preset"),
                   help="x264 speed against file size (README: encoder settings)")
    p.add_argument("--device", choices=DEVICES, default=default(EngineConfig, "device"))
    p.add_argument("--engine", choices=get_args(EngineKind),
                   default=default(EngineConfig, "engine"))
    p.add_argument("--int8", action="store_true",
                   help="with --engine onnx: static 8-bit model, calibrated on the first "
                        "frames of the first render with this checkpoint (then cached)")
    p.add_argument("--batch-size", type=int_at_least(0),
                   default=default(EngineConfig, "batch_size"),
                   help="frames per generator call; 0 (default): fitted to the device's free "
                        "memory, halved automatically if the GPU runs out")
    p.add_argument("--threads", type=int_at_least(0), default=default(EngineConfig, "threads"),
                   help="CPU threads of the generator; 0 (default): measured choice "
                        "(README: render speed)")
    p.add_argument("--silence-db", type=float_in(-200.0, 0.0),
                   default=default(RenderConfig, "silence_db"),
                   help="quieter frames keep the template's mouth (dBFS)")
    p.add_argument("--preview", action="store_true", help="also write a side-by-side video")
    p.add_argument("--hd-retrieval", action="store_true",
                   help="replace teeth/tongue with the person's own HD mouths (needs an index)")
    p.add_argument("--index", type=Path,
                   help="mouth library (default: retrieval/NAME of the checkpoint's run)")
    p.add_argument("--hd-strength", type=float_in(0.0, 1.0), default=default(HDConfig, "strength"),
                   help="0..1: mix of generated (0) and retrieved (1) pixels")
    p.add_argument("--hd-query", choices=get_args(HDQuery), default=default(HDConfig, "query"),
                   help="what finds the library's mouths (README: HD retrieval)")
    p.add_argument("--hd-lips", action="store_true",
                   help="replace the lips too, not only teeth and tongue")
    p.add_argument("--stats", type=Path,
                   help="write per-stage timings (busy seconds, share of wall time) as JSON")
    p.add_argument("--no-cache", action="store_true",
                   help="track the template again instead of reading its cached tracking")
    p.add_argument("--sequential", action="store_true",
                   help="run the stages one after the other (to measure the parallel chain)")
    p.set_defaults(handler=_cmd_render)
