"""The ``nibble`` command line: one subcommand per engine job.

Subcommands live in ``engine/commands/<name>.py`` (this module and ``_*.py`` helpers aside); each module defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. They are discovered, not listed here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import signal
import sys

import engine
import engine.commands
from engine.commands._args import OneLineParser
from engine.core.errors import Cancelled, NibbleError


# Engine messages name settings in words (engine.core.errors.SETTINGS); on the command line each is an option.
FLAGS = {
    "quant type": "--type", "output path": "--out", "calibration text": "--calibration",
    "importance matrix": "--imatrix", "saved importance matrix": "--save-imatrix", "context length": "--ctx", "KV cache type": "--kv-type",
    "GPU layers": "--gpu-layers", "device": "--device", "bits": "--bits", "group size": "--group-size",
    "calibration samples": "--samples", "sample length": "--seqlen", "revision": "--revision",
    "importance matrix windows": "--imatrix-chunks", "threads": "--threads",
}


def error_line(exc: NibbleError) -> str:
    """The one line the CLI prints for ``exc``: its message, after the option that sets what it names."""
    flag = FLAGS.get(exc.setting or "")
    return f"{flag}: {exc}" if flag else str(exc)


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(engine.commands.__path__):
        if info.name.startswith("_") or info.name == "cli":
            continue
        mods.append(importlib.import_module(f"engine.commands.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


class _VersionAction(argparse.Action):
    """``--version``: Nibble's version and those of its native parts (read only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from engine.core.buildinfo import build_info, format_build_info

        print("\n".join(format_build_info(build_info(load_torch=False))))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nibble",
        description="Quantize Hugging Face models to GGUF or AWQ, chat with them, and measure what it cost.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show the versions of Nibble, llama.cpp, torch and Qt")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


class _NoteHandler(logging.Handler):
    """The engine's warnings, one ``nibble: note:`` line each on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"nibble: note: {record.getMessage()}", file=sys.stderr)


def _notes_to_stderr() -> None:
    logger = logging.getLogger("engine")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        handler = _NoteHandler(logging.WARNING)
        logger.addHandler(handler)


def _ignore_cancel_signals(whole_process: bool) -> None:
    if not whole_process:  # called as a function (tests): leave the caller's handlers alone
        return
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    _notes_to_stderr()
    # A terminated job (the GUI's Cancel) is handled like Ctrl-C: clean up, exit 2.
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    except ValueError:  # not the main thread (tests calling main directly)
        pass
    try:
        return int(args._run(args) or 0)
    except Cancelled as exc:
        _ignore_cancel_signals(argv is None)
        print(f"nibble: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _ignore_cancel_signals(argv is None)  # a second Ctrl-C while this is said changes nothing: the job is stopped
        print("nibble: cancelled; no output was written", file=sys.stderr)
        return 2
    except NibbleError as exc:
        if getattr(args, "json_progress", False):  # the app reads this, in its own words for the setting
            print(json.dumps({"event": "error", "message": str(exc), "setting": exc.setting}), flush=True)
        print(f"nibble: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
