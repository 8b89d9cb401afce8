"""Every colour Nibble draws with, for the light and the dark scheme, in one place.

The Qt palette roles (window, text, buttons...) and Nibble's own colours (messages, code blocks, banners,
chart series, the fit marks) live side by side, so a scheme can be checked for contrast as a whole.
Views never name a colour: they ask :func:`app.style.colors` for the scheme in use.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from PySide6.QtGui import QColor, QPalette


@dataclass(frozen=True)
class Scheme:
    dark: bool
    # Qt's palette roles
    window: str
    window_text: str
    base: str
    alternate_base: str
    text: str
    button: str
    button_text: str
    highlight: str
    highlighted_text: str
    link: str
    placeholder: str
    tooltip_base: str
    tooltip_text: str
    mid: str
    # Nibble's own
    muted: str  # secondary text: who spoke, figures
    code_background: str  # fenced code in chat replies
    error: str
    warn: str
    plot_original: str
    plot_error: str
    plot_bar: str
    plot_highlight: str  # #AARRGGBB: the first divergence in Compare
    fits: str
    tight: str
    no: str

    def color(self, name: str) -> QColor:
        return QColor(getattr(self, name))


LIGHT = Scheme(
    dark=False,
    window="#f3f3f5", window_text="#1d1d1f", base="#ffffff", alternate_base="#e8e8ed", text="#1d1d1f",
    button="#ececef", button_text="#1d1d1f", highlight="#2d6cc9", highlighted_text="#ffffff", link="#1a5fb4",
    placeholder="#6b6b70", tooltip_base="#ffffdc", tooltip_text="#1d1d1f", mid="#b8b8bd",
    muted="#55555a", code_background="#eeeef2", error="#b3261e", warn="#8a5a00",
    plot_original="#2864c8", plot_error="#d25a1e", plot_bar="#328c50", plot_highlight="#5aff5050",
    fits="#14823a", tight="#8a6100", no="#be1e1e",
)

DARK = Scheme(
    dark=True,
    window="#2b2b2e", window_text="#e6e6e6", base="#1e1e20", alternate_base="#333338", text="#e6e6e6",
    button="#3a3a3e", button_text="#e6e6e6", highlight="#3d74c7", highlighted_text="#ffffff", link="#7fb0ff",
    placeholder="#9a9a9f", tooltip_base="#3a3a3e", tooltip_text="#e6e6e6", mid="#55555a",
    muted="#b4b4ba", code_background="#2c2c31", error="#f2837a", warn="#e3b458",
    plot_original="#5aa0f0", plot_error="#fa8c50", plot_bar="#78c88c", plot_highlight="#6eff7878",
    fits="#6ed282", tight="#f0c85a", no="#f06e6e",
)

_ROLES = {
    "window": QPalette.ColorRole.Window, "window_text": QPalette.ColorRole.WindowText,
    "base": QPalette.ColorRole.Base, "alternate_base": QPalette.ColorRole.AlternateBase,
    "text": QPalette.ColorRole.Text, "button": QPalette.ColorRole.Button,
    "button_text": QPalette.ColorRole.ButtonText, "highlight": QPalette.ColorRole.Highlight,
    "highlighted_text": QPalette.ColorRole.HighlightedText, "link": QPalette.ColorRole.Link,
    "placeholder": QPalette.ColorRole.PlaceholderText, "tooltip_base": QPalette.ColorRole.ToolTipBase,
    "tooltip_text": QPalette.ColorRole.ToolTipText, "mid": QPalette.ColorRole.Mid,
}


def qpalette(scheme: Scheme) -> QPalette:
    """The QPalette of ``scheme``; disabled text is the placeholder colour."""
    p = QPalette()
    for name, role in _ROLES.items():
        p.setColor(role, QColor(getattr(scheme, name)))
    p.setColor(QPalette.ColorRole.BrightText, QColor(scheme.error))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(scheme.placeholder))
    return p


def luminance(color: QColor) -> float:
    """WCAG 2 relative luminance of an opaque colour."""
    def channel(v: float) -> float:
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.redF()) + 0.7152 * channel(color.greenF()) + 0.0722 * channel(color.blueF())


def contrast(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21; text wants at least 4.5)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def color_names() -> list[str]:
    return [f.name for f in fields(Scheme) if f.name != "dark"]
