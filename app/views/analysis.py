"""Analysis: a tree of layers and tensors; histograms of weights and quantization error; per-layer errors."""

from __future__ import annotations

import csv
import pathlib
import re

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import calls, features
from app.features import field
from app.jobs import run_in_thread
from app.state import AppState, ModelEntry, kind_of
from app.style import plot_colors
from app.widgets import Banner, ModelPicker

_LAYER = re.compile(r"(?:^|\.)(?:blk|layers|h|block)\.(\d+)\.")


def layer_of(name: str) -> str:
    m = _LAYER.search(name)
    return f"Layer {int(m.group(1))}" if m else "Other tensors"


def _layer_key(label: str) -> tuple[int, int]:
    m = re.match(r"Layer (\d+)", label)
    return (0, int(m.group(1))) if m else (1, 0)


class AnalysisView(QWidget):
    stats_shown = Signal(object)
    layers_shown = Signal(object)

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.current_stats = None
        self.layer_rows: list = []
        self.computed: dict = {}
        self.items: dict = {}
        self.paths: tuple = ()
        self.job = None
        self._jobs: list = []

        lay = QVBoxLayout(self)
        top = QGridLayout()
        top.addWidget(QLabel("Original:"), 0, 0)
        self.original = ModelPicker(state, kinds=("original",))
        top.addWidget(self.original, 0, 1)
        top.addWidget(QLabel("Quantized:"), 1, 0)
        self.quantized = ModelPicker(state, kinds=("gguf", "awq"))
        top.addWidget(self.quantized, 1, 1)
        self.load_btn = QPushButton("Analyse")
        top.addWidget(self.load_btn, 0, 2, 2, 1)
        lay.addLayout(top)
        self.banner = Banner()
        lay.addWidget(self.banner)

        split = QSplitter(Qt.Orientation.Horizontal)
        lay.addWidget(split, 1)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tensor", "Shape", "Type"])
        self.tree.setColumnWidth(0, 220)
        split.addWidget(self.tree)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        opts = QHBoxLayout()
        self.log_y = QCheckBox("Log scale")
        self.export_png = QPushButton("Export PNG…")
        self.export_csv = QPushButton("Export CSV…")
        opts.addWidget(self.log_y)
        self.progress = QProgressBar()
        self.progress.hide()
        opts.addWidget(self.progress, 1)
        opts.addStretch(1)
        opts.addWidget(self.export_png)
        opts.addWidget(self.export_csv)
        rl.addLayout(opts)
        self.weights_plot = pg.PlotWidget(title="Original weights")
        self.error_plot = pg.PlotWidget(title="Quantization error")
        plots = QHBoxLayout()
        plots.addWidget(self.weights_plot)
        plots.addWidget(self.error_plot)
        rl.addLayout(plots, 3)
        nbox = QGroupBox("Selected tensor")
        nf = QFormLayout(nbox)
        self.numbers = {k: QLabel("—") for k in ("name", "rmse", "max_error", "cosine", "bpw")}
        nf.addRow("Tensor:", self.numbers["name"])
        nf.addRow("RMSE:", self.numbers["rmse"])
        nf.addRow("Max error:", self.numbers["max_error"])
        nf.addRow("Cosine similarity:", self.numbers["cosine"])
        nf.addRow("Bits per weight:", self.numbers["bpw"])
        rl.addWidget(nbox)
        self.layer_plot = pg.PlotWidget(title="Error per layer (RMSE relative to the weights' RMS)")
        rl.addWidget(self.layer_plot, 2)
        split.addWidget(right)
        split.setSizes([320, 900])

        self.weights_hist = pg.BarGraphItem(x=[], height=[], width=1)
        self.error_hist = pg.BarGraphItem(x=[], height=[], width=1)
        self.layer_bars = pg.BarGraphItem(x=[], height=[], width=0.8)
        self.weights_plot.addItem(self.weights_hist)
        self.error_plot.addItem(self.error_hist)
        self.layer_plot.addItem(self.layer_bars)
        for p in (self.weights_plot, self.error_plot, self.layer_plot):
            p.getAxis("left").enableAutoSIPrefix(False)
        self._apply_colors()

        self.load_btn.clicked.connect(self.load)
        self.tree.currentItemChanged.connect(self._tensor_selected)
        self.log_y.toggled.connect(self._redraw_hists)
        self.export_png.clicked.connect(lambda: self.export_figures())
        self.export_csv.clicked.connect(lambda: self.export_numbers())
        if not calls.stats_available():
            self.banner.show_message(features.not_available_text("Weight and error statistics"), "warn")

    def _apply_colors(self) -> None:
        c = plot_colors()
        for p in (self.weights_plot, self.error_plot, self.layer_plot):
            p.setBackground(c["background"])
            for axis in ("left", "bottom"):
                p.getAxis(axis).setPen(c["foreground"])
                p.getAxis(axis).setTextPen(c["foreground"])
        self.weights_hist.setOpts(brush=c["original"], pen=None)
        self.error_hist.setOpts(brush=c["error"], pen=None)
        self.layer_bars.setOpts(brush=c["bar"], pen=None)

    def changeEvent(self, event) -> None:
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()
        super().changeEvent(event)

    def open_payload(self, payload: dict) -> None:
        for key, picker in (("original", self.original), ("quantized", self.quantized)):
            if payload.get(key):
                picker.set_model(ModelEntry(payload[key], kind_of(payload[key])))
        self.load()

    def _paths(self) -> tuple[str, str | None] | None:
        o, q = self.original.current(), self.quantized.current()
        if o is None:
            self.banner.show_message("Pick the original model (and a quantized one to see the error).")
            return None
        return o.path, (q.path if q else None)

    # -- loading -----------------------------------------------------------------------------------

    def load(self) -> None:
        paths = self._paths()
        if paths is None:
            return
        if not calls.stats_available():
            self.banner.show_message(features.not_available_text("Weight and error statistics"), "warn")
            return
        if paths[1] is None:
            self.banner.show_message("Pick a quantized model (GGUF or AWQ) to compare with the original.")
            return
        if self.job is not None:
            self.job.cancel()
        self.banner.clear()
        self.paths = paths
        self.tree.clear()
        self.items = {}
        self.computed = {}
        self.layer_rows = []
        self.current_stats = None
        self.layer_bars.setOpts(x=[], height=[], width=0.8)
        self.progress.setRange(0, 0)
        self.progress.show()
        self._jobs.append(run_in_thread(calls.list_tensors, *paths, on_result=self._fill_tree,
                                        on_error=self.banner.show_message))
        self.job = run_in_thread(calls.model_stats, *paths, pass_reporter=True, on_item=self._tensor_done,
                                 on_progress=self._progress, on_result=self._model_done,
                                 on_error=self.banner.show_message, on_end=self._model_ended)

    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{done} / {total} tensors")

    def _model_ended(self) -> None:
        self.job = None
        self.progress.hide()

    def _fill_tree(self, names) -> None:
        if self.items:
            return
        groups: dict[str, QTreeWidgetItem] = {}
        for name in names:
            label = layer_of(name)
            if label not in groups:
                groups[label] = QTreeWidgetItem([label])
            item = QTreeWidgetItem([name, "", ""])
            item.setData(0, Qt.ItemDataRole.UserRole, name)
            groups[label].addChild(item)
            self.items[name] = item
        for label in sorted(groups, key=_layer_key):
            self.tree.addTopLevelItem(groups[label])
        for name, st in self.computed.items():
            self._decorate(name, st)
        if self.tree.topLevelItemCount():
            first = self.tree.topLevelItem(0)
            first.setExpanded(True)
            if first.childCount():
                self.tree.setCurrentItem(first.child(0))

    def _decorate(self, name: str, st) -> None:
        item = self.items.get(name)
        if item is not None:
            item.setText(1, "×".join(str(x) for x in field(st, "shape", ())))
            item.setText(2, f"{field(st, 'qtype', '')}  rel. error {field(st, 'relative_error', 0):.4f}")

    def _tensor_done(self, st) -> None:
        name = field(st, "name")
        self.computed[name] = st
        self._decorate(name, st)
        cur = self.tree.currentItem()
        if cur is not None and cur.data(0, Qt.ItemDataRole.UserRole) == name and self.current_stats is None:
            self.show_stats(st)

    def _model_done(self, report) -> None:
        self._show_layers(field(report, "layers", []))

    def _tensor_selected(self, item: QTreeWidgetItem | None, _prev=None) -> None:
        if item is None:
            return
        name = item.data(0, Qt.ItemDataRole.UserRole)
        if not name:
            return
        if name in self.computed:
            self.show_stats(self.computed[name])
            return
        self.numbers["name"].setText(f"{name} (computing…)")
        self._jobs.append(run_in_thread(calls.tensor_stats, *self.paths, name, on_result=self._single_done,
                                        on_error=self.banner.show_message))

    def _single_done(self, st) -> None:
        self.computed.setdefault(field(st, "name"), st)
        cur = self.tree.currentItem()
        if cur is not None and cur.data(0, Qt.ItemDataRole.UserRole) == field(st, "name"):
            self.show_stats(st)

    # -- showing -----------------------------------------------------------------------------------

    def show_stats(self, stats) -> None:
        self.current_stats = stats
        self.numbers["name"].setText(str(field(stats, "name", "")))
        for key, attr, fmt in (("rmse", "rmse", "{:.6g}"), ("max_error", "max_abs_error", "{:.6g}"),
                               ("cosine", "cosine", "{:.6f}"), ("bpw", "bits_per_weight", "{:.3f}")):
            v = field(stats, attr)
            self.numbers[key].setText(fmt.format(v) if isinstance(v, (int, float)) else "—")
        rel = field(stats, "relative_error")
        if isinstance(rel, (int, float)):
            self.numbers["rmse"].setText(self.numbers["rmse"].text() + f"  (relative {rel:.4f})")
        self._redraw_hists()
        self.stats_shown.emit(stats)

    @staticmethod
    def _bars(edges, counts, log: bool) -> dict:
        edges = np.asarray(edges, dtype=float)
        counts = np.asarray(counts, dtype=float)
        if counts.size == 0:
            return {"x": [], "height": [], "width": 1}
        heights = np.log10(counts + 1) if log else counts
        return {"x": (edges[:-1] + edges[1:]) / 2, "height": heights, "width": float(np.diff(edges).mean())}

    def _redraw_hists(self) -> None:
        s = self.current_stats
        if s is None:
            return
        log = self.log_y.isChecked()
        for item, plot, key in ((self.weights_hist, self.weights_plot, "weights"), (self.error_hist, self.error_plot, "error")):
            h = field(s, "weight_hist" if key == "weights" else "error_hist")
            if h is None:
                item.setOpts(x=[], height=[], width=1)
                continue
            item.setOpts(**self._bars(field(h, "edges"), field(h, "counts"), log))
            plot.setLabel("left", "log10(count + 1)" if log else "count")
            plot.autoRange()

    def _show_layers(self, rows) -> None:
        self.layer_rows = [r for r in (rows or []) if field(r, "layer") is not None]
        xs = [int(field(r, "layer")) for r in self.layer_rows]
        heights = [float(field(r, "relative_error", 0.0) or 0.0) for r in self.layer_rows]
        self.layer_bars.setOpts(x=xs, height=heights, width=0.8)
        self.layer_plot.setLabel("bottom", "layer")
        self.layer_plot.setLabel("left", "relative RMSE")
        self.layer_plot.autoRange()
        self.layers_shown.emit(self.layer_rows)

    # -- export ------------------------------------------------------------------------------------

    def export_figures(self, folder: str | None = None) -> list[pathlib.Path]:
        import pyqtgraph.exporters as exporters

        folder = folder or QFileDialog.getExistingDirectory(self, "Export figures to")
        if not folder:
            return []
        out = []
        for name, plot in (("weights", self.weights_plot), ("error", self.error_plot), ("layers", self.layer_plot)):
            path = pathlib.Path(folder) / f"nibble-{name}.png"
            exporters.ImageExporter(plot.getPlotItem()).export(str(path))
            out.append(path)
        return out

    def export_numbers(self, path: str | None = None) -> pathlib.Path | None:
        path = path or QFileDialog.getSaveFileName(self, "Export numbers", "nibble-analysis.csv", "CSV (*.csv)")[0]
        if not path:
            return None
        p = pathlib.Path(path)
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["scope", "name", "qtype", "n_elements", "bits_per_weight", "rmse", "relative_error",
                        "max_abs_error", "cosine"])
            for name in sorted(self.computed, key=lambda n: (layer_of(n) == "Other tensors", n)):
                t = self.computed[name]
                w.writerow(["tensor", name, field(t, "qtype"), field(t, "n_elements"), field(t, "bits_per_weight"),
                            field(t, "rmse"), field(t, "relative_error"), field(t, "max_abs_error"), field(t, "cosine")])
            for r in self.layer_rows:
                w.writerow(["layer", field(r, "layer"), "", field(r, "n_elements"), field(r, "bits_per_weight"),
                            field(r, "rmse"), field(r, "relative_error"), "", field(r, "min_cosine")])
        return p

    def is_busy(self) -> bool:
        return self.job is not None

    def shutdown(self) -> None:
        if self.job is not None:
            self.job.cancel()
