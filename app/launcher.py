"""Entry point of the ``nibble`` script: the GUI with no arguments (or ``gui``), else the CLI.

Kept free of Qt imports so that CLI commands start fast and work where Qt cannot load.
"""

from __future__ import annotations

import sys


def _run_module(module: str, args: list[str]) -> int:
    """``nibble -m MODULE ARGS`` in a frozen bundle, where ``sys.executable`` is this program.

    Engine jobs start their native workers as ``[sys.executable, "-m", "engine.<worker>", ...]``;
    from source that is Python, in the bundle it lands here.
    """
    import runpy

    if module != "engine" and not module.startswith("engine."):
        print(f"nibble: -m {module}: only Nibble's own engine modules can be run", file=sys.stderr)
        return 2
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(sys, "frozen", False) and len(argv) >= 2 and argv[0] == "-m":
        return _run_module(argv[1], argv[2:])
    if not argv or argv[0] == "gui":
        from app.main import run_gui

        return run_gui(argv[1:])
    from engine.commands.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
