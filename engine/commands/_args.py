"""Argument types shared by the commands: one place per kind of setting, so every range is checked before
any work starts and every refusal reads the same ("--ctx -1: must be a positive number of tokens").

Each helper returns a function for argparse's ``type=``; argparse puts the option's name in front and
:class:`OneLineParser` turns it into one line.
"""

from __future__ import annotations

import argparse
import math
import re
import sys


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: must be a whole number") from None


def _float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: must be a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
    return value


def positive_int(unit: str = "") -> callable:
    """A whole number of at least 1 (``unit``: what it counts, for the message)."""
    what = f"a positive number of {unit}" if unit else "a positive whole number"

    def parse(text: str) -> int:
        value = _int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text}: must be {what}")
        return value

    parse.__name__ = "positive_int"
    return parse


def non_negative_int(unit: str = "") -> callable:
    what = f"0 or more {unit}".rstrip()

    def parse(text: str) -> int:
        value = _int(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text}: must be {what}")
        return value

    parse.__name__ = "non_negative_int"
    return parse


def gpu_layers(text: str) -> int:
    """Layers to offload: 0 or more, or -1 for all of them."""
    value = _int(text)
    if value < -1:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more layers, or -1 for all")
    return value


def temperature(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 (greedy) or more")
    return value


def probability(text: str) -> float:
    """A probability mass in (0, 1], such as top-p."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0 and at most 1")
    return value


def seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text}: must be from 0 to {2**32 - 1}")
    return value


def text(value: str) -> str:
    """Text typed on the command line; undecodable bytes (invalid UTF-8 in the shell's locale) are refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("is not valid UTF-8 text; retype it or set a UTF-8 locale") from None
    return value


_ARGUMENT = re.compile(r"^argument (?:[^:]*/)?([^:/]+): (.*)$", re.S)


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line, ``nibble: error: --ctx -1: must be ...; see `nibble estimate --help```, exit 2."""

    def error(self, message: str):
        m = _ARGUMENT.match(message)
        if m:
            name, rest = m.groups()
            message = f"{name} {rest}" if not rest.startswith(("expected", "invalid choice")) else f"{name}: {rest}"
        message = " ".join(message.split())
        self.exit(2, f"nibble: error: {message}; see `{self.prog} --help`\n")

    def exit(self, status=0, message=None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)
