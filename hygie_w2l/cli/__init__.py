"""The ``hygie-w2l`` command line. Each subcommand parses its flags into a frozen config here,
at the edge, and calls one function of the pipeline module that owns the work.

Whatever goes wrong that a user can fix is one line on stderr naming the file and the fix,
exit code 2 (errors.HygieError, or a bad flag); Ctrl-C, ``kill`` (SIGTERM) and a closed
terminal (SIGHUP) stop a command the same way, so temporary files are removed and a
training run writes last.pt before exiting (exit code 128 + the signal's number).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from hygie_w2l import __version__
from hygie_w2l.cli import person, render, tools
from hygie_w2l.cli.args import Parser
from hygie_w2l.console import filtered_stderr
from hygie_w2l.errors import EXIT_USER_ERROR, HygieError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "doctor": ("check ffmpeg, torch, MediaPipe, FAISS and the weights", tools.add_doctor),
    "info": ("what ffmpeg sees in a media file (ffprobe-like)", tools.add_info),
    "synth": ("write the synthetic talking-face clip (tests, demo)", tools.add_synth),
    "weights": ("download, import, verify or list the official weights", tools.add_weights),
    "export-onnx": ("export a generator to ONNX (dynamic batch)", tools.add_export),
    "probe": ("is this video good for training? (contact sheet + stats)", person.add_probe),
    "prepare": ("turn a person's video into a training dataset", person.add_prepare),
    "train-sync": ("fine-tune the lip-sync expert on a dataset", person.add_train_sync),
    "train": ("fine-tune a generator (the lips model by default) on a dataset",
              person.add_train),
    "index": ("build the HD mouth library of prepared dataset(s)", person.add_index),
    "render": ("make a template video (or photo) speak new audio", render.add_render),
    "eval": ("score a generator on a dataset's held-out split", person.add_eval),
    "cache": ("show or clear the cache (ONNX exports, template tracking)", tools.add_cache),
    "ui": ("a local web page for the whole journey (needs the [ui] extra)", tools.add_ui),
}
"""Each command's one-line help and the function that adds its flags (imports of the
heavy modules happen there, only for the command being run, so the CLI starts fast)."""
FFMPEG_COMMANDS = ("info", "synth", "probe", "prepare", "render", "eval")
"""The commands that run ffmpeg: its one-time check runs beside their imports."""


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C (every ``with`` and ``finally`` runs)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its flags (all: when None)."""
    Parser.argv = list(argv or [])
    parser = Parser(prog="hygie-w2l",
                    description="Person-specific lip-sync. Use only with the consent of the "
                                "person shown; outputs are tagged as synthetic.")
    parser.add_argument("--version", action="version", version=f"hygie-w2l {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' own logs (MediaPipe, TensorFlow Lite)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    wanted = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (text, add) in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if argv is None or name == wanted:
            add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if next((a for a in argv if not a.startswith("-")), None) in FFMPEG_COMMANDS:
        from hygie_w2l.media import warm_ffmpeg

        warm_ffmpeg()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    with filtered_stderr(enabled=not args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command, its user errors as one line and exit code 2."""
    try:
        return int(args.handler(args))
    except HygieError as exc:
        return _error(str(exc))
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        return _error(f"{exc.filename}: {(exc.strerror or 'not allowed').lower()}. Choose a "
                      "file or folder you can write to (or fix its permissions).")
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return _error(f"{exc.filename or 'an output'}: the disk is full. Free some space and "
                      "run the command again; nothing half-written was kept.")
    except KeyboardInterrupt as exc:
        number = exc.signum if isinstance(exc, Stopped) else int(signal.SIGINT)
        print(f"hygie-w2l: stopped ({signal.Signals(number).name}); temporary files removed, "
              "outputs already written are complete.", file=sys.stderr)
        return 128 + number


def _error(message: str) -> int:
    print(f"hygie-w2l: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR
