"""Commands around the main journey: doctor, info, synth, weights, export-onnx."""

from __future__ import annotations

import argparse
from pathlib import Path

from hygie_w2l.cli.args import ARCH_CHOICES, POSITIVE, arch, default, float_in, int_at_least, int_in
from hygie_w2l.errors import HygieError
from hygie_w2l.types import GENERATOR_ARCHS


def _cmd_doctor(args: argparse.Namespace) -> int:
    from hygie_w2l.doctor import run_doctor

    return run_doctor(Path(args.checkpoints))


def _cmd_synth(args: argparse.Namespace) -> int:
    from hygie_w2l.fixtures import FixtureConfig, truth_path, write_fixture

    config = FixtureConfig(seconds=args.seconds, size_px=args.size, seed=args.seed)
    truth = write_fixture(args.out, config)
    print(f"wrote {args.out} ({truth['n_frames']} frames at {truth['fps']} fps) "
          f"and {truth_path(args.out)}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from hygie_w2l.media import load_audio, probe

    info = probe(args.file)
    print(f"{info.path}: {info.duration_s:.3f} s")
    if info.has_video:
        vfr = "variable" if info.variable_frame_rate else "constant"
        print(f"  video: {info.video_codec} {info.width}x{info.height}, {info.fps:g} fps "
              f"({vfr} frame rate), {info.n_frames} frames, rotation {info.rotation_deg} deg")
    for a in info.audio_streams:
        print(f"  audio: {a.codec} {a.sample_rate_hz} Hz {a.channels}")
    if args.audio:
        import numpy as np

        from hygie_w2l.audio import SAMPLE_RATE_HZ

        wav = load_audio(args.file)
        rms_db = 20 * np.log10(max(float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))), 1e-9))
        print(f"  decoded: {wav.size} samples at {SAMPLE_RATE_HZ} Hz mono "
              f"({wav.size / SAMPLE_RATE_HZ:.3f} s), RMS {rms_db:.1f} dBFS")
    return 0


def add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path)
    p.add_argument("--audio", action="store_true",
                   help="also decode the audio to 16 kHz mono, as every command does")
    p.set_defaults(handler=_cmd_info)


def _cmd_weights(args: argparse.Namespace) -> int:
    from hygie_w2l import weights

    specs = weights.load_manifest(args.manifest)
    dest = Path(args.dest) if args.dest else Path(args.manifest).parent
    if args.action in ("download", "verify") and args.names:
        unknown = sorted(set(args.names) - {s.name for s in specs})
        if unknown:
            raise weights.WeightsError(f"unknown weight file(s) {unknown}; known: "
                                       f"{', '.join(s.name for s in specs)}")
        specs = [s for s in specs if s.name in args.names]
    if args.action == "download":
        weights.download(specs, dest, args.accept_license, args.timeout)
        return 0
    if args.action == "import":
        weights.import_folder(Path(args.folder), specs, dest)
        return 0
    rows = weights.status_table(specs, dest, check_hash=args.action == "verify")
    print("\n".join(rows))
    return 1 if any("BAD" in r for r in rows) else 0


def add_weights(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.weights import DEFAULT_MANIFEST

    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--dest", default=None, help="folder of the weights (default: the "
                   "manifest's folder)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = actions.add_parser("download", help="fetch, resume and verify (size + SHA-256)")
    d.add_argument("names", nargs="*", help="only these files (default: all)")
    d.add_argument("--accept-license", action="store_true",
                   help="accept the weights' non-commercial terms (asked once)")
    d.add_argument("--timeout", type=POSITIVE, default=20.0, help="seconds per network read")
    i = actions.add_parser("import", help="verify and copy files downloaded by hand")
    i.add_argument("folder")
    v = actions.add_parser("verify", help="recheck size and SHA-256 of the files present")
    v.add_argument("names", nargs="*")
    actions.add_parser("list", help="what the manifest holds and what is present")
    p.set_defaults(handler=_cmd_weights)


def _cmd_export(args: argparse.Namespace) -> int:
    from hygie_w2l.export import export_generator
    from hygie_w2l.generators import PixelGenerator, generator_class
    from hygie_w2l.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint, expect=GENERATOR_ARCHS) if args.checkpoint \
        else None
    cls = generator_class(ckpt.arch if ckpt is not None else arch(args.arch))
    if not issubclass(cls, PixelGenerator):
        raise HygieError(f"the {cls.arch} generator has no network to export: "
                         f"{cls.int8_refusal}.")
    if ckpt is not None:
        model = ckpt.model
    else:
        model = cls.build_model({"size_px": args.size} if cls.crop_kind == "mouth" else None)
        print(f"no --checkpoint: exporting a freshly initialised {cls.arch} (for benchmarks)")
    generator = cls.of_model(model)
    feeds = None
    if args.int8 and args.calibrate:
        from hygie_w2l.dataset import PreparedDataset
        from hygie_w2l.generate import calibration_feeds

        feeds = calibration_feeds(PreparedDataset(args.calibrate), generator)
    elif args.int8:
        print("no --calibrate DATASET: INT8 activation ranges calibrated on random inputs "
              "(fine for speed benchmarks; calibrate on the person's prepared dataset for "
              "real use, or let render --engine onnx --int8 calibrate on its first frames)")
    report = export_generator(model, generator, args.out, int8=args.int8, calibration=feeds)
    print(f"wrote {report.path} (max relative error vs PyTorch {report.relative_error:.1e})")
    if report.int8_path:
        print(f"wrote {report.int8_path} (INT8, relative error {report.int8_relative_error:.1e})")
    return 0


def add_export(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.crops import CropConfig
    from hygie_w2l.types import MOUTH_CROP_SIZES_PX

    p.add_argument("--checkpoint", help="checkpoint file or run folder")
    p.add_argument("--arch", choices=ARCH_CHOICES, default=ARCH_CHOICES[0],
                   help="without --checkpoint: export a fresh model of this architecture")
    p.add_argument("--size", type=int, default=default(CropConfig, "mouth_px"),
                   choices=MOUTH_CROP_SIZES_PX, help="mouth crop size (fresh FiLM U-Net)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--int8", action="store_true",
                   help="also write a static INT8 model (QLinearConv, calibrated)")
    p.add_argument("--calibrate", type=Path, metavar="DATASET",
                   help="prepared dataset whose frames calibrate the INT8 activation ranges")
    p.set_defaults(handler=_cmd_export)


def add_doctor(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.weights import CHECKPOINTS_DIR

    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS_DIR,
                   help="folder of the weights")
    p.set_defaults(handler=_cmd_doctor)


def add_synth(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.fixtures import FixtureConfig

    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--seconds", type=float_in(0.2, 3600.0),
                   default=default(FixtureConfig, "seconds"),
                   help="duration (default %(default)s)")
    p.add_argument("--size", type=int_in(64, 4096), default=default(FixtureConfig, "size_px"),
                   help="frame side in pixels (default %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=default(FixtureConfig, "seed"),
                   help="random seed of speech and motion")
    p.set_defaults(handler=_cmd_synth)


def _cmd_cache(args: argparse.Namespace) -> int:
    from hygie_w2l.cache import cache_root, clear_cache, list_cache

    if args.action == "clear":
        n, size = clear_cache(args.kind)
        print(f"removed {n} files ({size / 2**20:.1f} MB) from {cache_root()}")
        return 0
    entries = [e for e in list_cache() if args.kind in (None, e.kind)]
    for e in entries:
        print(f"{e.kind:10s}{e.bytes / 2**20:9.1f} MB  {e.path.name}"
              + (f"  ({e.source})" if e.source else ""))
    total = sum(e.bytes for e in entries)
    print(f"{len(entries)} files, {total / 2**20:.1f} MB in {cache_root()} ($HYGIE_CACHE)")
    return 0


def add_cache(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.cache import KINDS

    p.add_argument("action", choices=["list", "clear"],
                   help="list: what is kept and its size; clear: remove it")
    p.add_argument("--kind", choices=KINDS, help="only ONNX exports or template tracking")
    p.set_defaults(handler=_cmd_cache)


def _cmd_ui(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise HygieError("the web page needs the optional extra: pip install "
                         "'hygie-w2l[ui]' (or `make ui`, which installs it).") from None
    from hygie_w2l.ui.page import serve

    serve(args.home, args.host, args.port)
    return 0


def add_ui(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int_in(1, 65535), default=7860)
    p.add_argument("--home", type=Path, default=Path("hygie-ui"),
                   help="workspace: people, renders and jobs (default ./hygie-ui)")
    p.set_defaults(handler=_cmd_ui)
