"""The ``hygie-w2l`` command line. Each subcommand parses its flags into a frozen config here,
at the edge, and calls one function of the pipeline module that owns the work."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from hygie_w2l import __version__
from hygie_w2l.errors import EXIT_USER_ERROR, HygieError
from hygie_w2l.types import GENERATOR_ARCHS, Device, TrackerBackend

Handler = Callable[[argparse.Namespace], int]
DEVICES = get_args(Device)
ARCH_CHOICES = [a.replace("_", "-") for a in GENERATOR_ARCHS]  # as typed: film-unet


def _default(config: type, name: str) -> Any:
    """A config dataclass's default for one field: the CLI shows the library's defaults."""
    return {f.name: f.default for f in dataclasses.fields(config)}[name]


def _arch(name: str) -> str:
    """film-unet (as typed) -> film_unet (as stored)."""
    return name.replace("-", "_")


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


def _add_info(p: argparse.ArgumentParser) -> None:
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


def _add_weights(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.weights import DEFAULT_MANIFEST

    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--dest", default=None, help="folder of the weights (default: the "
                   "manifest's folder)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = actions.add_parser("download", help="fetch, resume and verify (size + SHA-256)")
    d.add_argument("names", nargs="*", help="only these files (default: all)")
    d.add_argument("--accept-license", action="store_true",
                   help="accept the weights' non-commercial terms (asked once)")
    d.add_argument("--timeout", type=float, default=20.0, help="seconds per network read")
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
    cls = generator_class(ckpt.arch if ckpt is not None else _arch(args.arch))
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


def _add_export(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.crops import MOUTH_CROP_SIZES_PX, CropConfig

    p.add_argument("--checkpoint", help="checkpoint file or run folder")
    p.add_argument("--arch", choices=ARCH_CHOICES, default=ARCH_CHOICES[0],
                   help="without --checkpoint: export a fresh model of this architecture")
    p.add_argument("--size", type=int, default=_default(CropConfig, "mouth_px"),
                   choices=MOUTH_CROP_SIZES_PX, help="mouth crop size (fresh FiLM U-Net)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--int8", action="store_true",
                   help="also write a static INT8 model (QLinearConv, calibrated)")
    p.add_argument("--calibrate", type=Path, metavar="DATASET",
                   help="prepared dataset whose frames calibrate the INT8 activation ranges")
    p.set_defaults(handler=_cmd_export)


def _cmd_probe(args: argparse.Namespace) -> int:
    from hygie_w2l.probe import probe_video

    report = probe_video(args.video, args.out, config=_tracker_config(args))
    print(report.text())
    print(f"contact sheet: {args.out}")
    return 0


def _tracker_config(args: argparse.Namespace) -> Any:
    from hygie_w2l.face_tracker import TrackerConfig

    return TrackerConfig(backend=args.backend)


def _add_backend(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.face_tracker import TrackerConfig

    p.add_argument("--backend", choices=get_args(TrackerBackend),
                   default=_default(TrackerConfig, "backend"))


def _add_probe(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", type=Path)
    p.add_argument("--out", type=Path, default=Path("probe.png"), help="contact sheet image")
    _add_backend(p)
    p.set_defaults(handler=_cmd_probe)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from hygie_w2l.crops import CropConfig
    from hygie_w2l.prepare import PrepareConfig, prepare

    config = PrepareConfig(crops=CropConfig(mouth_px=args.mouth_size),
                           val_fraction=args.val_fraction, tracker=_tracker_config(args))
    summary = prepare(args.video, args.out, audio=args.audio, config=config)
    if summary.skipped:
        print(f"{args.out}: already prepared from this source and config; nothing to do")
    print(summary.text())
    return 0


def _add_prepare(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.crops import MOUTH_CROP_SIZES_PX, CropConfig
    from hygie_w2l.prepare import PrepareConfig

    p.add_argument("video", type=Path)
    p.add_argument("--audio", type=Path, help="the speech, when not in the video itself")
    p.add_argument("--out", type=Path, required=True, help="dataset folder")
    p.add_argument("--mouth-size", type=int, default=_default(CropConfig, "mouth_px"),
                   choices=MOUTH_CROP_SIZES_PX, help="side of the FiLM U-Net mouth crop in "
                   "pixels")
    p.add_argument("--val-fraction", type=float,
                   default=_default(PrepareConfig, "val_fraction"))
    _add_backend(p)
    p.set_defaults(handler=_cmd_prepare)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "init": args.init, "device": args.device, "seed": args.seed,
            "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every}


def _stop_on_sigterm() -> None:
    """`kill` (SIGTERM) stops a run like Ctrl-C: last.pt is written before exiting."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _cmd_train_sync(args: argparse.Namespace) -> int:
    from hygie_w2l.runs import is_main, resolve_config
    from hygie_w2l.train_sync import train_sync

    _stop_on_sigterm()
    config = resolve_config("expert", args.preset, _train_overrides(args) | {"arch":
                                                                               "syncnet_color"})
    s = train_sync(args.dataset, args.out, config, resume=args.resume)
    if is_main():
        print(f"expert {s.init}: {s.steps} steps, best validation loss "
              f"{s.best_val_loss:.4f}, accuracy {s.best_val_accuracy:.3f}"
              f"{' (early stop)' if s.stopped_early else ''}; best checkpoint "
              f"{s.run / 'best.pt'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hygie_w2l.generators import default_arch, generator_class
    from hygie_w2l.runs import is_main, resolve_config
    from hygie_w2l.train import train

    _stop_on_sigterm()
    arch = _arch(args.arch) if args.arch else default_arch()
    config = resolve_config(generator_class(arch).preset_section, args.preset,
                            _train_overrides(args) | {"arch": arch, "expert": args.expert,
                                                      "gan": True if args.gan else None})
    s = train(args.dataset, args.out, config, resume=args.resume)
    if is_main():
        print(s.report or f"{s.steps} steps ({s.seconds_per_step:.2f} s/step), best "
              f"validation mouth L1 {s.best_val:.4f}")
        if s.skipped_samples:
            print(f"warning: {s.skipped_samples} unreadable samples were replaced by others; "
                  "the dataset may be damaged (prepare it again)")
        print(f"best checkpoint {s.run / 'best.pt'}")
    return 0


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.runs import PRESETS, TrainConfig

    p.add_argument("dataset", type=Path, help="a folder written by `hygie-w2l prepare`")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--preset", choices=PRESETS, default=_default(TrainConfig, "preset"))
    p.add_argument("--init", help="checkpoint to start from, or 'scratch'")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")


def _add_train_sync(p: argparse.ArgumentParser) -> None:
    _add_train_flags(p)
    p.set_defaults(handler=_cmd_train_sync)


def _add_train(p: argparse.ArgumentParser) -> None:
    _add_train_flags(p)
    p.add_argument("--arch", choices=ARCH_CHOICES,
                   help="default: wav2lip when its official weights are in checkpoints/, "
                        "else film-unet")
    p.add_argument("--expert", help="lip-sync expert (checkpoint or run folder) for wav2lip")
    p.add_argument("--gan", action="store_true", help="add the visual-quality discriminator")
    p.set_defaults(handler=_cmd_train)


def _cmd_render(args: argparse.Namespace) -> int:
    from hygie_w2l.generate import EngineConfig
    from hygie_w2l.hd import HDConfig
    from hygie_w2l.render import RenderConfig, render

    hd = HDConfig(strength=args.hd_strength, lips=args.hd_lips) if args.hd_retrieval else None
    engine = EngineConfig(device=args.device, engine=args.engine, int8=args.int8,
                          batch_size=args.batch_size)
    config = RenderConfig(blend=args.blend, loop=args.loop, start_s=args.start, crf=args.crf,
                          engine=engine, silence_db=args.silence_db, preview=args.preview,
                          hd=hd, index=args.index)
    summary = render(args.face, args.audio, args.checkpoint, args.out, config, args.stats)
    print(summary.table())
    print(f"wrote {summary.out}" + (f" and {summary.preview}" if summary.preview else ""))
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from hygie_w2l.library import IndexConfig, build_index

    config = IndexConfig(pca_dims=args.pca_dims, appearance_weight=args.appearance_weight,
                         split=args.split)
    print(build_index(args.datasets, args.out, config).text())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from hygie_w2l.evaluate import EvalConfig, evaluate
    from hygie_w2l.hd import HDConfig

    hd = HDConfig(index=args.index, lips=args.hd_lips) if args.index else None
    config = EvalConfig(blend=args.blend, max_frames=args.max_frames, hd=hd,
                        expert=args.expert, side_by_side=not args.no_video)
    report = evaluate(args.dataset, args.checkpoint, args.out, config)
    print(report.table())
    for note in report.metrics["notes"]:
        print(f"note: {note}")
    print(f"wrote {report.out}/report.md, metrics.json, plots"
          + ("" if args.no_video else ", side_by_side.mp4"))
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.blend import BlendMode
    from hygie_w2l.evaluate import EvalConfig

    p.add_argument("dataset", type=Path, help="dataset folder from prepare")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="generator checkpoint or run folder")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--index", type=Path, help="mouth library: also score generated+HD")
    p.add_argument("--hd-lips", action="store_true", help="HD replaces the lips too")
    p.add_argument("--expert", type=Path,
                   help="lip-sync expert for the sync score when syncnet_v2.model is absent "
                        "(default: the run's expert, else the official one in checkpoints/)")
    p.add_argument("--blend", choices=get_args(BlendMode), default=_default(EvalConfig, "blend"))
    p.add_argument("--max-frames", type=int, default=_default(EvalConfig, "max_frames"),
                   help="held-out frames scored")
    p.add_argument("--no-video", action="store_true", help="skip the side-by-side video")
    p.set_defaults(handler=_cmd_eval)


def _add_index(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.library import IndexConfig

    p.add_argument("datasets", nargs="+", type=Path, help="dataset folder(s) from prepare")
    p.add_argument("--out", required=True, type=Path, help="library folder, e.g. retrieval/NAME")
    p.add_argument("--split", choices=["train", "all"], default=_default(IndexConfig, "split"),
                   help="frames that enter the library (default: the training split)")
    p.add_argument("--pca-dims", type=int, default=_default(IndexConfig, "pca_dims"),
                   help="appearance code size")
    p.add_argument("--appearance-weight", type=float,
                   help="weight of appearance vs lip shape (default: tuned on held-out frames)")
    p.set_defaults(handler=_cmd_index)


def _add_render(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.blend import BlendMode
    from hygie_w2l.generate import EngineConfig, EngineKind
    from hygie_w2l.hd import HDConfig
    from hygie_w2l.render import RenderConfig
    from hygie_w2l.template import LoopMode

    p.add_argument("--face", required=True, type=Path, help="template video or photo")
    p.add_argument("--audio", required=True, type=Path, help="speech, any format")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="our checkpoint or run folder, or an official Wav2Lip file")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--blend", choices=get_args(BlendMode),
                   default=_default(RenderConfig, "blend"))
    p.add_argument("--loop", choices=get_args(LoopMode), default=_default(RenderConfig, "loop"),
                   help="when the audio outlasts the template")
    p.add_argument("--start", type=float, default=_default(RenderConfig, "start_s"),
                   help="offset into the template (s)")
    p.add_argument("--crf", type=int, default=_default(RenderConfig, "crf"),
                   help="x264 quality (lower is better)")
    p.add_argument("--device", choices=DEVICES, default=_default(EngineConfig, "device"))
    p.add_argument("--engine", choices=get_args(EngineKind),
                   default=_default(EngineConfig, "engine"))
    p.add_argument("--int8", action="store_true",
                   help="with --engine onnx: static 8-bit model, calibrated on the first "
                        "frames of the first render with this checkpoint (then cached)")
    p.add_argument("--batch-size", type=int, default=_default(EngineConfig, "batch_size"),
                   help="frames per generator call; 0 (default): fitted to the device's free "
                        "memory, halved automatically if the GPU runs out")
    p.add_argument("--silence-db", type=float, default=_default(RenderConfig, "silence_db"),
                   help="quieter frames keep the template's mouth (dBFS)")
    p.add_argument("--preview", action="store_true", help="also write a side-by-side video")
    p.add_argument("--hd-retrieval", action="store_true",
                   help="replace teeth/tongue with the person's own HD mouths (needs an index)")
    p.add_argument("--index", type=Path,
                   help="mouth library (default: retrieval/NAME of the checkpoint's run)")
    p.add_argument("--hd-strength", type=float, default=_default(HDConfig, "strength"),
                   help="0..1: mix of generated (0) and retrieved (1) pixels")
    p.add_argument("--hd-lips", action="store_true",
                   help="replace the lips too, not only teeth and tongue")
    p.add_argument("--stats", type=Path, help="write per-stage timings as JSON")
    p.set_defaults(handler=_cmd_render)


def _add_doctor(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.weights import CHECKPOINTS_DIR

    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS_DIR,
                   help="folder of the weights")
    p.set_defaults(handler=_cmd_doctor)


def _add_synth(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.fixtures import FixtureConfig

    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--seconds", type=float, default=_default(FixtureConfig, "seconds"),
                   help="duration (default %(default)s)")
    p.add_argument("--size", type=int, default=_default(FixtureConfig, "size_px"),
                   help="frame side in pixels (default %(default)s)")
    p.add_argument("--seed", type=int, default=_default(FixtureConfig, "seed"),
                   help="random seed of speech and motion")
    p.set_defaults(handler=_cmd_synth)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "doctor": ("check ffmpeg, torch, MediaPipe, FAISS and the weights", _add_doctor),
    "info": ("what ffmpeg sees in a media file (ffprobe-like)", _add_info),
    "synth": ("write the synthetic talking-face clip (tests, demo)", _add_synth),
    "weights": ("download, import, verify or list the official weights", _add_weights),
    "export-onnx": ("export a generator to ONNX (dynamic batch)", _add_export),
    "probe": ("is this video good for training? (contact sheet + stats)", _add_probe),
    "prepare": ("turn a person's video into a training dataset", _add_prepare),
    "train-sync": ("fine-tune the lip-sync expert on a dataset", _add_train_sync),
    "train": ("fine-tune the generator on a dataset", _add_train),
    "index": ("build the HD mouth library of prepared dataset(s)", _add_index),
    "render": ("make a template video (or photo) speak new audio", _add_render),
    "eval": ("score a generator on a dataset's held-out split", _add_eval),
}
"""Each command's one-line help and the function that adds its flags (imports of the
heavy modules happen there, only for the command being run, so the CLI starts fast)."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its flags (all: when None)."""
    parser = argparse.ArgumentParser(
        prog="hygie-w2l",
        description="Person-specific Wav2Lip lip-sync. Use only with the consent of the "
                    "person shown; outputs are tagged as synthetic.")
    parser.add_argument("--version", action="version", version=f"hygie-w2l {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (text, add) in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if argv is None or name == wanted:
            add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.handler(args))
    except HygieError as exc:
        print(f"hygie-w2l: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("hygie-w2l: interrupted; outputs already written are complete.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
