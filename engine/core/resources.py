"""Files that ship with Nibble: calibration and evaluation texts, the demo model, icons."""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import NibbleError

RESOURCES = Path(__file__).resolve().parent.parent.parent / "resources"
DEMO_DIR = RESOURCES / "demo"


def resource_path(name: str) -> Path:
    path = RESOURCES / name
    if not path.exists():
        raise NibbleError(f"{path} is missing from this installation; reinstall Nibble")
    return path
