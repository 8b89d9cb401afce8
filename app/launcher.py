"""Entry point of the ``nibble`` script: the GUI with no arguments (or ``gui``), else the CLI.

Kept free of Qt imports so that CLI commands start fast and work where Qt cannot load.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "gui":
        from app.main import run_gui

        return run_gui(argv[1:])
    from engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
