"""The KLD heat strip: one coloured cell per token of the original's answer, coloured by the quantized
model's KL divergence at that position (log scale), with a legend and the exact value in a tooltip."""

from __future__ import annotations

import math

from PySide6.QtCore import QRect, QSize
from PySide6.QtGui import QColor, QLinearGradient, QPainter
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolTip, QWidget

from app.services import format_kld

LOW, HIGH = 1e-4, 1.0  # the scale's ends: at or below LOW the coolest colour, at or above HIGH the hottest
CELL_W, CELL_H = 14, 16


def heat_level(kld: float) -> float:
    """Where ``kld`` falls on the scale, 0..1 (log10 between LOW and HIGH)."""
    if kld <= LOW:
        return 0.0
    return min(1.0, (math.log10(kld) - math.log10(LOW)) / (math.log10(HIGH) - math.log10(LOW)))


def heat_colour(kld: float) -> QColor:
    """Green (no divergence) through yellow to red (a divergence of 1 nat or more)."""
    return QColor.fromHsvF(0.33 * (1.0 - heat_level(kld)), 0.85, 0.95)


class HeatStrip(QWidget):
    """A row (wrapping) of cells, one per token; hover a cell for its token and KLD."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pieces: list[str] = []
        self.kld: list[float] = []
        self.setMouseTracking(True)
        self.setMinimumHeight(CELL_H)

    def set_values(self, pieces: list[str], kld: list[float]) -> None:
        self.pieces, self.kld = list(pieces), list(kld)
        self.updateGeometry()
        self.update()

    def clear(self) -> None:
        self.set_values([], [])

    def _per_row(self) -> int:
        return max(1, self.width() // CELL_W)

    def cell_rect(self, i: int) -> QRect:
        row, col = divmod(i, self._per_row())
        return QRect(col * CELL_W, row * CELL_H, CELL_W - 1, CELL_H - 1)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, w: int) -> int:
        per = max(1, w // CELL_W)
        return max(1, math.ceil(len(self.kld) / per)) * CELL_H

    def sizeHint(self) -> QSize:
        return QSize(300, self.heightForWidth(300))

    def resizeEvent(self, event) -> None:
        self.setMinimumHeight(self.heightForWidth(self.width()))
        super().resizeEvent(event)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        for i, v in enumerate(self.kld):
            p.fillRect(self.cell_rect(i), heat_colour(v))
        p.end()

    def tooltip_text(self, i: int) -> str:
        piece = self.pieces[i] if i < len(self.pieces) else ""
        return f"token {i + 1} {piece!r}: KL divergence {format_kld(self.kld[i])}"

    def index_at(self, x: int, y: int) -> int | None:
        per = self._per_row()
        col, row = x // CELL_W, y // CELL_H
        i = row * per + col
        return i if 0 <= col < per and 0 <= i < len(self.kld) else None

    def event(self, e) -> bool:
        if e.type() == e.Type.ToolTip:
            i = self.index_at(e.pos().x(), e.pos().y())
            if i is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(e.globalPos(), self.tooltip_text(i), self)
            return True
        return super().event(e)


class GradientBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedSize(140, 12)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        g = QLinearGradient(0, 0, self.width(), 0)
        for n in range(11):
            level = n / 10
            g.setColorAt(level, QColor.fromHsvF(0.33 * (1.0 - level), 0.85, 0.95))
        p.fillRect(self.rect(), g)
        p.end()


class HeatLegend(QWidget):
    """The scale of the strip: its ends and what they mean."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("KLD per token:"))
        lay.addWidget(QLabel(f"≤ {format_kld(LOW)}"))
        lay.addWidget(GradientBar())
        lay.addWidget(QLabel(f"≥ {format_kld(HIGH)} (log scale; hover a cell)"))
        lay.addStretch(1)
        self.setToolTip("The quantized model's KL divergence from the original at each token of the original's "
                        "answer: green, the same distribution; red, a different one")
