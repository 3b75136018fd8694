"""The person's commands: probe, prepare, train-sync, train, index, eval."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from hygie_w2l.cli.args import (
    ARCH_CHOICES,
    DEVICES,
    POSITIVE,
    arch,
    default,
    float_in,
    int_at_least,
)
from hygie_w2l.types import TrackerBackend


def _cmd_probe(args: argparse.Namespace) -> int:
    from hygie_w2l.probe import probe_video

    report = probe_video(args.video, args.out, config=_tracker_config(args))
    print(report.text())
    print(f"contact sheet: {args.out}")
    return 0


def _tracker_config(args: argparse.Namespace) -> Any:
    from hygie_w2l.face_tracker import TrackerConfig

    return TrackerConfig(backend=args.backend, face_index=args.face_index)


def _backend_flag(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.face_tracker import TrackerConfig

    p.add_argument("--backend", choices=get_args(TrackerBackend),
                   default=default(TrackerConfig, "backend"))
    face_index_flag(p)


def face_index_flag(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.face_tracker import TrackerConfig

    p.add_argument("--face-index", type=int_at_least(0),
                   default=default(TrackerConfig, "face_index"),
                   help="with several faces: follow the largest (0), the next one (1) ...")


def add_probe(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", type=Path)
    p.add_argument("--out", type=Path, default=Path("probe.png"), help="contact sheet image")
    _backend_flag(p)
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


def add_prepare(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.crops import CropConfig
    from hygie_w2l.prepare import PrepareConfig
    from hygie_w2l.types import MOUTH_CROP_SIZES_PX

    p.add_argument("video", type=Path)
    p.add_argument("--audio", type=Path, help="the speech, when not in the video itself")
    p.add_argument("--out", type=Path, required=True, help="dataset folder")
    p.add_argument("--mouth-size", type=int, default=default(CropConfig, "mouth_px"),
                   choices=MOUTH_CROP_SIZES_PX, help="side of the FiLM U-Net mouth crop in "
                   "pixels")
    p.add_argument("--val-fraction", type=float_in(0.0, 0.5, low_open=True),
                   default=default(PrepareConfig, "val_fraction"))
    _backend_flag(p)
    p.set_defaults(handler=_cmd_prepare)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "init": args.init, "device": args.device, "seed": args.seed,
            "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every}


def _cmd_train_sync(args: argparse.Namespace) -> int:
    from hygie_w2l.runs import is_main, resolve_config
    from hygie_w2l.train_sync import train_sync

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

    name = arch(args.arch) if args.arch else default_arch()
    config = resolve_config(generator_class(name).preset_section, args.preset,
                            _train_overrides(args) | {"arch": name, "expert": args.expert,
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


def _train_flags(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.runs import PRESETS, TrainConfig

    p.add_argument("dataset", type=Path, help="a folder written by `hygie-w2l prepare`")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--preset", choices=PRESETS, default=default(TrainConfig, "preset"))
    p.add_argument("--init", help="checkpoint to start from, or 'scratch'")
    p.add_argument("--steps", type=int_at_least(1))
    p.add_argument("--batch-size", type=int_at_least(1))
    p.add_argument("--lr", type=POSITIVE, help="learning rate (> 0)")
    p.add_argument("--eval-every", type=int_at_least(1))
    p.add_argument("--checkpoint-every", type=int_at_least(1))
    p.add_argument("--seed", type=int_at_least(0))
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")


def add_train_sync(p: argparse.ArgumentParser) -> None:
    _train_flags(p)
    p.set_defaults(handler=_cmd_train_sync)


def add_train(p: argparse.ArgumentParser) -> None:
    _train_flags(p)
    p.add_argument("--arch", choices=ARCH_CHOICES,
                   help="default: wav2lip when its official weights are in checkpoints/, "
                        "else film-unet")
    p.add_argument("--expert", help="lip-sync expert (checkpoint or run folder) for wav2lip")
    p.add_argument("--gan", action="store_true", help="add the visual-quality discriminator")
    p.set_defaults(handler=_cmd_train)


def _cmd_index(args: argparse.Namespace) -> int:
    from hygie_w2l.library import IndexConfig, build_index

    config = IndexConfig(pca_dims=args.pca_dims, appearance_weight=args.appearance_weight,
                         split=args.split)
    print(build_index(args.datasets, args.out, config).text())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from hygie_w2l.evaluate import EvalConfig, evaluate
    from hygie_w2l.hd import HDConfig

    hd = HDConfig(index=args.index, lips=args.hd_lips, query=args.hd_query) if args.index \
        else None
    config = EvalConfig(blend=args.blend, max_frames=args.max_frames, hd=hd,
                        expert=args.expert, side_by_side=not args.no_video)
    report = evaluate(args.dataset, args.checkpoint, args.out, config)
    print(report.table())
    for note in report.metrics["notes"]:
        print(f"note: {note}")
    print(f"wrote {report.out}/report.md, metrics.json, plots"
          + ("" if args.no_video else ", side_by_side.mp4"))
    return 0


def add_eval(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.blend import BlendMode
    from hygie_w2l.evaluate import EvalConfig
    from hygie_w2l.hd import HDConfig, HDQuery

    p.add_argument("dataset", type=Path, help="dataset folder from prepare")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="generator checkpoint or run folder")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--index", type=Path, help="mouth library: also score generated+HD")
    p.add_argument("--hd-lips", action="store_true", help="HD replaces the lips too")
    p.add_argument("--hd-query", choices=get_args(HDQuery), default=default(HDConfig, "query"),
                   help="what finds the library's mouths for an image generator")
    p.add_argument("--expert", type=Path,
                   help="lip-sync expert for the sync score when syncnet_v2.model is absent "
                        "(default: the run's expert, else the official one in checkpoints/)")
    p.add_argument("--blend", choices=get_args(BlendMode), default=default(EvalConfig, "blend"))
    p.add_argument("--max-frames", type=int_at_least(10),
                   default=default(EvalConfig, "max_frames"),
                   help="held-out frames scored")
    p.add_argument("--no-video", action="store_true", help="skip the side-by-side video")
    p.set_defaults(handler=_cmd_eval)


def add_index(p: argparse.ArgumentParser) -> None:
    from hygie_w2l.library import IndexConfig

    p.add_argument("datasets", nargs="+", type=Path, help="dataset folder(s) from prepare")
    p.add_argument("--out", required=True, type=Path, help="library folder, e.g. retrieval/NAME")
    p.add_argument("--split", choices=["train", "all"], default=default(IndexConfig, "split"),
                   help="frames that enter the library (default: the training split)")
    p.add_argument("--pca-dims", type=int_at_least(1), default=default(IndexConfig, "pca_dims"),
                   help="appearance code size")
    p.add_argument("--appearance-weight", type=float_in(0.0, 100.0),
                   help="weight of appearance vs lip shape (default: tuned on held-out frames)")
    p.set_defaults(handler=_cmd_index)
