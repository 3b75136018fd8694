"""What every command's flags share: the parser (one-line errors, exit code 2), range
checks done where a number is parsed (a negative batch or a zero learning rate never reaches
the work), the library's defaults and the architecture names as typed."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn, get_args

from hygie_w2l.errors import EXIT_USER_ERROR
from hygie_w2l.types import GENERATOR_ARCHS, Device

DEVICES = get_args(Device)
ARCH_CHOICES = [a.replace("_", "-") for a in GENERATOR_ARCHS]  # as typed: film-unet


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (what is wrong and how to fix it) and
    exit code 2, like every other error of the tool."""

    argv: list[str] = []  # the command line being parsed (set by build_parser)

    def error(self, message: str) -> NoReturn:
        dashed = [a for a in Parser.argv if a.startswith("-") and a != "--"
                  and a.split("=")[0] not in self._option_string_actions
                  and not a.lstrip("-").replace(".", "", 1).isdigit()]
        hint = ""
        if dashed or "expected one argument" in message:
            name = dashed[0] if dashed else "-name"
            hint = (f" ({name!r} begins with '-' and is read as a flag: write a path as "
                    f"./{name.lstrip('.').lstrip('/')}, or put -- before it)")
        elif "required" in message or "invalid choice" in message:
            hint = f" (see {self.prog} --help)"
        print(f"{self.prog}: error: {message}{hint}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def default(config: type, name: str) -> Any:
    """A config dataclass's default for one field: the CLI shows the library's defaults."""
    return {f.name: f.default for f in dataclasses.fields(config)}[name]


def arch(name: str) -> str:
    """film-unet (as typed) -> film_unet (as stored)."""
    return name.replace("-", "_")


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``."""
    what = f"a whole number >= {low}"

    def parse(text: str) -> int:
        value = int(_number(int, text, what))
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""
    what = f"a whole number from {low} to {high}"

    def parse(text: str) -> int:
        value = int(_number(int, text, what))
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not {what}")
        return value

    parse.__name__ = what
    return parse


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False
             ) -> Callable[[str], float]:
    """An argparse type: a number in [low, high] (``*_open``: that end excluded; an
    infinite ``high`` means no upper bound)."""
    left, right = "(" if low_open else "[", ")" if high_open or math.isinf(high) else "]"
    what = f"a number in {left}{low:g}, {high:g}{right}"

    def parse(text: str) -> float:
        value = _number(float, text, what)
        if value < low or (low_open and value == low) or value > high or \
                (high_open and value == high):
            raise argparse.ArgumentTypeError(f"{value:g} is not {what}")
        return value

    parse.__name__ = what
    return parse


POSITIVE = float_in(0.0, math.inf, low_open=True)
NON_NEGATIVE = float_in(0.0, math.inf)
