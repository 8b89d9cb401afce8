"""The five views of the main window, each a :class:`View`."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget


class View(QWidget):
    """What the main window asks of every view; each view overrides what applies to it."""

    def activated(self) -> None:
        """The view was brought to the front."""

    def open_payload(self, payload: dict) -> None:
        """Another view asked to open models here (keys: ``model``, ``original``, ``quantized``)."""

    def is_busy(self) -> bool:
        """Whether a job of this view is still running (the window asks before quitting)."""
        return False

    def shutdown(self) -> None:
        """Stop what is running; the window is closing."""
