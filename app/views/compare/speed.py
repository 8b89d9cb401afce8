"""Compare's speed and memory, like with like: both sides timed through the same runtime (the original
through an unquantized GGUF of it, made once and cached), each side labelled with its runtime."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread, while_current
from app.services import human_bytes

ROWS = ("Runtime", "Prompt processing", "Generation", "Time to first token", "Peak memory (whole process)")
EXACTNESS = ("Answers, logits and KL divergence elsewhere in Compare still come from transformers in float32, "
             "where exactness matters; only these speed and memory figures use the unquantized GGUF.")


def speed_cells(bench) -> list[str]:
    return [f"{bench.pp_tokens_per_s:,.1f} tokens/s ± {bench.pp_std:,.1f}",
            f"{bench.tg_tokens_per_s:,.1f} tokens/s ± {bench.tg_std:,.1f}",
            f"{1000 * bench.ttft_s:,.1f} ms", human_bytes(bench.peak_rss_bytes)]


class SpeedPanel(QWidget):
    finished = Signal(object)  # the engine's SpeedComparison

    def __init__(self, paths, banner, parent=None):
        super().__init__(parent)
        self.paths, self.banner = paths, banner
        self.job = None
        self._gen = 0  # bumped by reset()
        self.result = None
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.run_btn = QPushButton("Measure speed and memory")
        self.progress = QProgressBar()
        self.status = QLabel()
        row.addWidget(self.run_btn)
        row.addWidget(self.progress, 1)
        row.addWidget(self.status, 1)
        lay.addLayout(row)
        self.table = QTableWidget(len(ROWS), 2)
        self.table.setHorizontalHeaderLabels(["Original", "Quantized"])
        self.table.setVerticalHeaderLabels(list(ROWS))
        self.table.verticalHeaderItem(len(ROWS) - 1).setToolTip(
            "The measuring process's peak resident memory: the model, its KV cache and the runtime's own libraries "
            "(which dominate for a very small model)")
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        lay.addWidget(self.table, 1)
        self.note = QLabel(EXACTNESS)
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.run_btn.clicked.connect(self.run)

    def reset(self) -> None:
        self._gen += 1  # results of a job for an earlier pair are dropped
        if self.job is not None:
            self.job.cancel()
        self.result = None
        self.table.clearContents()
        self.note.setText(EXACTNESS)
        self.status.clear()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def run(self) -> None:
        if self.job is not None:
            self.job.cancel()
            return
        paths = self.paths()
        if paths is None:
            return
        self.banner.clear()
        self.reset()
        self.progress.setRange(0, 0)
        self.run_btn.setText("Cancel")
        self.job = run_in_thread(
            services.compare_speed, paths[0], paths[1], pass_reporter=True,
            on_result=while_current(self, self.show_result), on_error=while_current(self, self.banner.show_message),
            on_end=self._ended, on_progress=while_current(self, self._progress),
            on_cancelled=lambda: self.status.setText("Cancelled."),
        )

    def _progress(self, done: int, total: int, message: str) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.status.setText(message)

    def _ended(self) -> None:
        self.job = None
        self.run_btn.setText("Measure speed and memory")
        if self.result is None:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def show_result(self, r) -> None:
        self.result = r
        for col, side in enumerate((r.original, r.quantized)):
            for row, text in enumerate([side.runtime, *speed_cells(side.bench)]):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setToolTip(side.model)
                self.table.setItem(row, col, item)
        self.note.setText(r.note if "transformers" in r.note else f"{r.note} {EXACTNESS}")
        self.status.setText("Done.")
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.finished.emit(r)

    def is_busy(self) -> bool:
        return self.job is not None
