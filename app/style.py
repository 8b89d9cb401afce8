"""Look and feel: Qt's Fusion style in a light or dark scheme (the system's, or the one the user forces),
and plots that match it. The colours themselves are in :mod:`app.palette`."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from app import palette as _palette
from app.palette import DARK, LIGHT, Scheme

APPEARANCES = ("system", "light", "dark")  # what the user can choose; "system" follows the desktop

_state = {"appearance": "system", "platform": None, "watching": False}


def system_scheme() -> Qt.ColorScheme:
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() if hasattr(hints, "colorScheme") else Qt.ColorScheme.Unknown


def is_dark(palette: QPalette | None = None) -> bool:
    """Whether ``palette`` (default: the application's, as :func:`apply_style` left it) is a dark one."""
    palette = palette or QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def colors() -> Scheme:
    """The scheme in use: every custom colour a view draws with."""
    return DARK if is_dark() else LIGHT


def apply_style(app: QApplication, appearance: str | None = None) -> None:
    """Fusion in the chosen appearance ("system", "light" or "dark"; None: the last one chosen).

    "system" keeps the palette the platform hands Fusion, except when the platform reports a dark scheme
    but hands a light palette (some Linux desktops): then Nibble's dark palette is used.
    """
    if appearance in APPEARANCES:
        _state["appearance"] = appearance
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    if _state["platform"] is None:
        _state["platform"] = QPalette(app.palette())
    mode = _state["appearance"]
    if mode == "system":
        dark = system_scheme() == Qt.ColorScheme.Dark
        platform = _state["platform"]
        wanted = _palette.qpalette(DARK) if dark and not is_dark(platform) else platform
    else:
        wanted = _palette.qpalette(DARK if mode == "dark" else LIGHT)
    app.setPalette(wanted)
    if not _state["watching"]:  # the desktop switches between light and dark: follow it
        _state["watching"] = True
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(lambda _s: apply_style(app))
    _apply_plot_defaults()


def appearance() -> str:
    return _state["appearance"]


def _apply_plot_defaults() -> None:
    import pyqtgraph as pg

    c = plot_colors()
    pg.setConfigOptions(background=c["background"], foreground=c["foreground"])


def dark_palette() -> QPalette:
    return _palette.qpalette(DARK)


def plot_colors() -> dict[str, QColor]:
    """Background, foreground and series colours for pyqtgraph that follow the current palette."""
    pal = QGuiApplication.palette()
    s = colors()
    return {
        "background": pal.color(QPalette.ColorRole.Base),
        "foreground": pal.color(QPalette.ColorRole.Text),
        "original": s.color("plot_original"),
        "error": s.color("plot_error"),
        "bar": s.color("plot_bar"),
        "highlight": s.color("plot_highlight"),
    }


def fit_colors(dark: bool | None = None) -> dict[str, QColor]:
    """Colours for the fits / tight / does not fit marks."""
    s = (DARK if dark else LIGHT) if dark is not None else colors()
    return {"fits": s.color("fits"), "tight": s.color("tight"), "no": s.color("no")}


def banner_color(kind: str) -> str:
    """The border colour of a message banner: "error", "warn" or "info"."""
    s = colors()
    return {"error": s.error, "warn": s.warn, "info": s.highlight}.get(kind, s.text)
