"""Compare's context panel: KLD against context length (one line per KV cache type) and by position within
the window, from the engine's context sweep in a background job; exported as PNG and CSV. Beside it, the
memory to run the quantized file's type at each KV cache type (the engine's estimate) and the KLD measured
with that cache."""

from __future__ import annotations

import math
import pathlib

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

import shiboken6

from app import services
from app.jobs import run_in_thread, while_current
from app.services import KV_CACHE_TYPES, format_kld, human_bytes
from app.style import plot_colors
from app.views.analysis import free_name, safe_name

KV_PENS = {"f16": (40, 100, 200), "q8_0": (210, 130, 30), "q4_0": (200, 50, 60)}
MIN_LENGTH = 64


def offered_lengths(trained: int, smallest: int = MIN_LENGTH) -> list[int]:
    """Powers of two from ``smallest`` up to the trained context, and the trained context itself."""
    out, n = [], smallest
    while n < trained:
        out.append(n)
        n *= 2
    return out + [trained] if trained >= smallest else out


class ContextPanel(QWidget):
    finished = Signal(object)  # the list of SweepResults, one per KV cache type

    def __init__(self, paths, banner, parent=None):
        super().__init__(parent)
        self.paths, self.banner = paths, banner
        self.job = self.plan_job = None
        self._gen = 0  # bumped by reset()
        self._header_wanted = False  # the pair's header is read once the panel is on screen
        self.plan = None
        self.qtype = ""
        self.results: list = []
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Context lengths:"))
        self.length_row = QHBoxLayout()
        row.addLayout(self.length_row)
        self.length_boxes: dict[int, QCheckBox] = {}
        row.addWidget(QLabel("KV cache:"))
        self.kv_boxes = {k: QCheckBox(k) for k in KV_CACHE_TYPES}
        for box in self.kv_boxes.values():
            box.setChecked(True)
            row.addWidget(box)
        self.windows = QSpinBox(minimum=0, maximum=10000)
        self.windows.setSpecialValueText("all windows")
        self.windows.setSuffix(" windows")
        self.windows.setValue(4)
        self.windows.setToolTip("Windows of the evaluation text scored at each length (all: the full text)")
        row.addWidget(self.windows)
        row.addStretch(1)
        self.run_btn = QPushButton("Run context sweep")
        self.export_png = QPushButton("Export PNG…")
        self.export_csv = QPushButton("Export CSV…")
        for b in (self.run_btn, self.export_png, self.export_csv):
            row.addWidget(b)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.status = QLabel()
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.status, 1)
        lay.addLayout(prow)
        plots = QHBoxLayout()
        self.length_plot = pg.PlotWidget(title="KL divergence against context length")
        self.length_plot.setLabel("bottom", "context length (tokens)")
        self.length_plot.setLabel("left", "mean KLD")
        self.length_plot.setLogMode(x=True, y=False)
        self.position_plot = pg.PlotWidget(title="KL divergence by position in the window")
        self.position_plot.setLabel("bottom", "position (tokens)")
        self.position_plot.setLabel("left", "mean KLD")
        for p in (self.length_plot, self.position_plot):
            p.addLegend()
            p.showGrid(x=True, y=True, alpha=0.3)
            p.setBackground(plot_colors()["background"])
            p.setMinimumHeight(200)
            plots.addWidget(p)
        lay.addLayout(plots, 1)
        self.memory_label = QLabel()
        lay.addWidget(self.memory_label)
        self.memory = QTableWidget(len(KV_CACHE_TYPES), 6)
        self.memory.setHorizontalHeaderLabels(["Memory to run", "Weights", "KV cache", "Compute buffers",
                                               "Runtime overhead", "Measured KLD (mean)"])
        self.memory.setVerticalHeaderLabels([f"KV cache {k}" for k in KV_CACHE_TYPES])
        self.memory.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.memory.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.memory.verticalHeader().setDefaultSectionSize(22)
        self.memory.setFixedHeight(4 * 22 + 8)
        self.memory.setToolTip("Memory to run: the engine's estimate (weights, KV cache, compute buffers and the "
                               "runtime's own overhead); measured KLD: the context sweep at the longest length")
        lay.addWidget(self.memory)

        self.run_btn.clicked.connect(self.run)
        self.export_png.clicked.connect(lambda: self.export_figures())
        self.export_csv.clicked.connect(lambda: self.export_numbers())

    # -- the pair ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """A new pair: forget the figures, read the quantized model's header (lengths, estimate) anew."""
        self._gen += 1  # results of a job for an earlier pair are dropped
        for job in (self.job, self.plan_job):
            if job is not None:
                job.cancel()
        self.results, self.plan, self.qtype = [], None, ""
        self._header_wanted = False
        self.length_plot.clear()
        self.position_plot.clear()
        self.status.clear()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._set_lengths([])
        self._fill_memory()
        paths = self.paths(quiet=True)
        if paths is None or services.kind_of(paths[1]) != services.GGUF:
            self.memory_label.setText("The context sweep and the KV cache types need a quantized GGUF.")
            return
        self.memory_label.setText("Reading the quantized model's header…")
        self._header_wanted = True
        # else once the panel is shown: reading a header holds the interpreter (0.1 s for the demo model's,
        # more for a large vocabulary), which a hidden panel should not cost the window
        if self.isVisible():
            self._read_header()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._header_wanted:
            self._read_header()

    def _read_header(self) -> None:
        self._header_wanted = False
        paths = self.paths(quiet=True)
        if paths is None:
            return
        quantized, gen = paths[1], self._gen

        def done(result) -> None:
            if not shiboken6.isValid(self) or gen != self._gen:  # the view closed, or the pair changed
                return
            if self.paths(quiet=True) is not None and self.paths(quiet=True)[1] == quantized:
                self.plan, self.qtype = result
                self._set_lengths(offered_lengths(self.plan.n_ctx_train))
                self._fill_memory()

        self.plan_job = run_in_thread(services.sweep_plan, quantized, on_result=done,
                                      on_error=self.memory_label.setText)

    def _set_lengths(self, lengths: list[int]) -> None:
        for box in self.length_boxes.values():
            self.length_row.removeWidget(box)
            box.deleteLater()
        self.length_boxes = {n: QCheckBox(f"{n:,}") for n in lengths}
        for n, box in self.length_boxes.items():
            box.setChecked(n in lengths[:3])  # the short ones: quick to run
            box.toggled.connect(lambda _on: self._fill_memory())
            self.length_row.addWidget(box)

    def lengths(self) -> list[int]:
        return [n for n, box in self.length_boxes.items() if box.isChecked()]

    def kv_types(self) -> list[str]:
        return [k for k, box in self.kv_boxes.items() if box.isChecked()]

    # -- memory beside the measurement ----------------------------------------------------------------

    def memory_ctx(self) -> int:
        """The context the estimate is for: the longest length swept, else the longest chosen."""
        if self.results:
            return self.results[0].lengths[-1]
        return max(self.lengths(), default=self.plan.n_ctx_train if self.plan else 0)

    def _fill_memory(self) -> None:
        self.memory.clearContents()
        if self.plan is None:
            return
        ctx = self.memory_ctx()
        self.memory_label.setText(f"{self.qtype} at a context of {ctx:,} tokens: memory to run (estimate) beside "
                                  "the KL divergence measured with each KV cache type")
        measured = {r.kv_type: r.points[-1] for r in self.results if r.points}
        for row, kv in enumerate(KV_CACHE_TYPES):
            est = services.estimate_or_error(self.plan, self.qtype, ctx=ctx, kv_type=kv)
            if isinstance(est, str):
                cells = [est, "", "", "", ""]
            else:
                r = est.run
                cells = [human_bytes(r.total_bytes), human_bytes(r.weights_bytes), human_bytes(r.kv_cache_bytes),
                         human_bytes(r.compute_bytes), human_bytes(r.overhead_bytes)]
            m = measured.get(kv)
            cells.append(f"{format_kld(m.kld_mean)} (same top token {100 * m.top1_agreement:.1f} %)" if m else "—")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.memory.setItem(row, col, item)

    # -- the sweep ------------------------------------------------------------------------------------

    def run(self) -> None:
        if self.job is not None:
            self.job.cancel()
            return
        paths = self.paths()
        if paths is None:
            return
        lengths, kv_types = self.lengths(), self.kv_types()
        if not lengths or not kv_types:
            self.banner.show_message("Tick at least one context length and one KV cache type.")
            return
        self.banner.clear()
        self.results = []
        self.length_plot.clear()
        self.position_plot.clear()
        self.progress.setRange(0, 0)
        self.run_btn.setText("Cancel")
        self.job = run_in_thread(
            services.run_kv_sweeps, paths[0], paths[1], lengths, kv_types, max_windows=self.windows.value() or None,
            pass_reporter=True, on_item=while_current(self, self._one_done),
            on_result=while_current(self, self._all_done), on_error=while_current(self, self._error),
            on_progress=while_current(self, self._progress), on_end=self._ended,
            on_cancelled=lambda: self.status.setText("Cancelled."),
        )

    def _progress(self, done: int, total: int, message: str) -> None:
        if message.startswith("KV cache"):
            self.kv_status = message
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status.setText(f"{getattr(self, 'kv_status', '')}: {message}")

    def _ended(self) -> None:
        self.job = None
        self.run_btn.setText("Run context sweep")

    def _error(self, message: str) -> None:
        self.banner.show_message(message)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _one_done(self, r) -> None:
        self.results.append(r)
        pen = pg.mkPen(KV_PENS.get(r.kv_type, (120, 120, 120)), width=2)
        ticks = [(math.log10(n), f"{n:,}") for n in r.lengths]
        self.length_plot.getAxis("bottom").setTicks([ticks, []])
        self.length_plot.plot([p.ctx for p in r.points], [p.kld_mean for p in r.points], pen=pen, symbol="o",
                              symbolBrush=pen.color(), name=f"KV cache {r.kv_type}")
        self.position_plot.plot([(b.start + b.end) / 2 for b in r.positions], [b.kld_mean for b in r.positions],
                                pen=pen, symbol="o", symbolBrush=pen.color(), name=f"KV cache {r.kv_type}")
        self.position_plot.setTitle(f"KL divergence by position in a window of {r.lengths[-1]:,} tokens")
        self._fill_memory()

    def _all_done(self, results: list) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText(f"{len(results)} KV cache types, lengths {', '.join(map(str, results[0].lengths))}"
                            if results else "")
        self.finished.emit(results)

    # -- export ---------------------------------------------------------------------------------------

    def _stem(self) -> str:
        paths = self.paths(quiet=True) or ("original", "quantized")
        return safe_name(f"{pathlib.Path(paths[0]).name}-vs-{pathlib.Path(paths[1]).name}")

    def export_figures(self, folder: str | None = None) -> list[pathlib.Path]:
        """Both plots as PNGs in ``folder``, named for the two models; a name already taken gets a number."""
        from pyqtgraph import exporters

        folder = folder or QFileDialog.getExistingDirectory(self, "Export figures to")
        if not folder:
            return []
        out = []
        for what, plot in (("context", self.length_plot), ("position", self.position_plot)):
            path = free_name(pathlib.Path(folder), f"nibble-{what}-{self._stem()}", ".png")
            exporters.ImageExporter(plot.getPlotItem()).export(str(path))
            out.append(path)
        self.banner.show_message(f"Saved {', '.join(p.name for p in out)} in {folder}", "info")
        return out

    def export_numbers(self, folder: str | None = None) -> pathlib.Path | None:
        """Every KV cache type's sweep as one CSV in ``folder`` (a row per length and per position bin)."""
        if not self.results:
            self.banner.show_message("Run the context sweep first; there is nothing to export yet.")
            return None
        folder = folder or QFileDialog.getExistingDirectory(self, "Export numbers to")
        if not folder:
            return None
        path = free_name(pathlib.Path(folder), f"nibble-context-{self._stem()}", ".csv")
        text = self.results[0].csv_text() + "".join(r.csv_text().split("\n", 1)[1] for r in self.results[1:])
        path.write_text(text, encoding="utf-8")
        self.banner.show_message(f"Saved {path.name} in {folder}", "info")
        return path

    def is_busy(self) -> bool:
        return self.job is not None
