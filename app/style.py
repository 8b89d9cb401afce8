"""Look and feel: Qt's Fusion style over the system palette (light or dark), plots that match it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication


def is_dark(palette: QPalette | None = None) -> bool:
    hints = QGuiApplication.styleHints()
    scheme = hints.colorScheme() if hasattr(hints, "colorScheme") else Qt.ColorScheme.Unknown
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    palette = palette or QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def apply_style(app: QApplication) -> None:
    """Fusion renders the same everywhere and takes the palette the platform reports (light or dark)."""
    app.setStyle("Fusion")
    if is_dark() and QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() >= 128:
        # The platform says dark but handed Fusion a light palette (some Linux desktops): build one.
        app.setPalette(dark_palette())


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor(30, 30, 32), QColor(43, 43, 46), QColor(230, 230, 230)
    for role, color in (
        (QPalette.ColorRole.Window, window),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, window),
        (QPalette.ColorRole.ToolTipBase, window),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, window),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.Highlight, QColor(64, 128, 214)),
        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
        (QPalette.ColorRole.Link, QColor(110, 170, 255)),
        (QPalette.ColorRole.PlaceholderText, QColor(140, 140, 140)),
    ):
        p.setColor(role, color)
    return p


def plot_colors() -> dict[str, QColor]:
    """Background, foreground and series colours for pyqtgraph that follow the current palette."""
    pal = QGuiApplication.palette()
    dark = is_dark(pal)
    return {
        "background": pal.color(QPalette.ColorRole.Base),
        "foreground": pal.color(QPalette.ColorRole.Text),
        "original": QColor(90, 160, 240) if dark else QColor(40, 100, 200),
        "error": QColor(250, 140, 80) if dark else QColor(210, 90, 30),
        "bar": QColor(120, 200, 140) if dark else QColor(50, 140, 80),
        "highlight": QColor(255, 120, 120, 110) if dark else QColor(255, 80, 80, 90),
    }


def fit_colors(dark: bool | None = None) -> dict[str, QColor]:
    """Colours for the fits / tight / does not fit marks."""
    dark = is_dark() if dark is None else dark
    if dark:
        return {"fits": QColor(110, 210, 130), "tight": QColor(240, 200, 90), "no": QColor(240, 110, 110)}
    return {"fits": QColor(20, 130, 50), "tight": QColor(170, 120, 0), "no": QColor(190, 30, 30)}
