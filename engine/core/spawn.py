"""The one way Nibble starts a child process of its own: ``python -m engine.<module> ...``.

From source the child is Python with Nibble's folder first on ``PYTHONPATH`` (so it runs the same code as
its parent, installed or not); in a frozen bundle ``sys.executable`` is Nibble itself, whose launcher runs
``-m engine.<module>`` (app/launcher.py). The protocols spoken over the child's pipes stay with the jobs that
use them: JSON lines on stdout (the quantizer's worker, the CLI's ``--json-progress``), one JSON object
(:mod:`engine.core.devices`, :mod:`engine.core.llama`), pickled calls over a pipe pair
(:mod:`engine.runtime.process`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The folder that holds the ``engine`` and ``app`` packages.
ROOT = Path(__file__).resolve().parent.parent.parent


def module_argv(module: str, *args: str) -> list[str]:
    """The argument list (program first) that runs ``python -m module args``."""
    if not (module == "engine" or module.startswith("engine.")):
        raise ValueError(f"only Nibble's engine modules are run as children, not {module}")
    return [sys.executable, "-m", module, *map(str, args)]


def child_env(base: dict | None = None, **extra: str) -> dict:
    """``base`` (default: this process's environment) with Nibble's folder first on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    if not getattr(sys, "frozen", False):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env
