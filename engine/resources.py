"""Files that ship with Nibble: calibration and evaluation texts, the demo model, icons."""

from __future__ import annotations

from pathlib import Path

from engine.errors import NibbleError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def default_calibration_path(model: str | Path | None = None) -> Path:
    """The calibration text used when none is given: the one Nibble ships; for the demo model and what
    was made from it (``engine.demo.is_demo_model``), its own training-split dialogues instead."""
    if model is not None:
        from engine.demo import calibration_path, is_demo_model

        if is_demo_model(model):
            return calibration_path()
    return resource_path("calibration.txt")


def resource_path(name: str) -> Path:
    path = RESOURCES / name
    if not path.exists():
        raise NibbleError(f"{path} is missing from this installation; reinstall Nibble")
    return path
