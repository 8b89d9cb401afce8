"""Files that ship with Nibble: calibration and evaluation texts, the demo model, icons."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.core.errors import NibbleError

RESOURCES = Path(__file__).resolve().parent.parent.parent / "resources"
DEMO_DIR = RESOURCES / "demo"


def inside_install(path: str | Path) -> bool:
    """Whether ``path`` lies inside Nibble's installation (its package or shipped resources): no place for
    a user's outputs, which a reinstall would delete."""
    root = RESOURCES.parent
    try:
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    return any(p == d or d in p.parents for d in (RESOURCES, root / "engine", root / "app"))


def resource_path(name: str) -> Path:
    path = RESOURCES / name
    if not path.exists():
        raise NibbleError(f"{path} is missing from this installation; reinstall Nibble")
    return path


def data_dir() -> Path:
    """Nibble's per-user data folder: ``NIBBLE_HOME`` if set, else the platform's usual place."""
    if os.environ.get("NIBBLE_HOME"):
        return Path(os.environ["NIBBLE_HOME"]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "Nibble"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Nibble"
    return Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "nibble"
