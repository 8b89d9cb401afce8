"""Analysis: a tree of layers and tensors; histograms of weights and quantization error; per-layer errors."""

from __future__ import annotations

import csv
import pathlib

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

from app import services
from app.jobs import run_in_thread
from app.services import AWQ, GGUF, ORIGINAL, TensorStats
from app.state import AppState, ModelEntry, kind_of
from app.style import plot_colors
from app.views import View
from app.widgets import Banner, ModelPicker

OTHER = "Other tensors"


def layer_label(name: str) -> str:
    """The tree group a tensor goes in: its decoder layer, or the tensors outside the layers."""
    n = services.layer_of(name)
    return OTHER if n is None else f"Layer {n}"


def safe_name(text: str) -> str:
    """``text`` as part of a file name on every system."""
    import re

    return re.sub(r"[^\w.+-]+", "_", text).strip("._") or "figure"


def free_name(folder: pathlib.Path, stem: str, suffix: str) -> pathlib.Path:
    """``folder/stem+suffix``, or ``stem-2``, ``stem-3``… when the name is taken."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def _group_key(label: str) -> tuple[int, int]:
    return (1, 0) if label == OTHER else (0, int(label.split()[1]))


class AnalysisView(View):
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
        self.original = ModelPicker(state, kinds=(ORIGINAL,))
        top.addWidget(self.original, 0, 1)
        top.addWidget(QLabel("Quantized:"), 1, 0)
        self.quantized = ModelPicker(state, kinds=(GGUF, AWQ))
        top.addWidget(self.quantized, 1, 1)
        self.load_btn = QPushButton("Analyse")
        top.addWidget(self.load_btn, 0, 2, 2, 1)
        lay.addLayout(top)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.basis = QLabel()
        self.basis.setWordWrap(True)
        lay.addWidget(self.basis)

        split = QSplitter(Qt.Orientation.Horizontal)
        lay.addWidget(split, 1)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tensor", "Shape", "Quant type", "Rel. error"])
        for col, width in enumerate((230, 70, 95, 60)):
            self.tree.setColumnWidth(col, width)
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
        split.setSizes([480, 740])

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
        if paths[1] is None:
            self.banner.show_message("Pick a quantized model (GGUF or AWQ) to compare with the original.")
            return
        if self.job is not None:
            self.job.cancel()
        self.banner.clear()
        self.basis.setText(services.comparison_basis(paths[1]))
        self.paths = paths
        self.tree.clear()
        self.items = {}
        self.computed = {}
        self.layer_rows = []
        self.current_stats = None
        self.layer_bars.setOpts(x=[], height=[], width=0.8)
        self.progress.setRange(0, 0)
        self.progress.show()
        self._jobs.append(run_in_thread(services.list_tensors, *paths, on_result=self._fill_tree,
                                        on_error=self.banner.show_message))
        self.job = run_in_thread(services.model_stats, *paths, pass_reporter=True, on_item=self._tensor_done,
                                 on_progress=self._progress, on_result=self._model_done,
                                 on_error=self.banner.show_message, on_end=self._model_ended)

    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{done} / {total} tensors")

    def _model_ended(self) -> None:
        self.job = None
        self.progress.hide()

    def _fill_tree(self, names: dict[str, str]) -> None:
        if self.items:
            return
        groups: dict[str, QTreeWidgetItem] = {}
        for name, qtype in names.items():
            label = layer_label(name)
            if label not in groups:
                groups[label] = QTreeWidgetItem([label])
            item = QTreeWidgetItem([name, "", qtype, ""])
            item.setData(0, Qt.ItemDataRole.UserRole, name)
            groups[label].addChild(item)
            self.items[name] = item
        for label in sorted(groups, key=_group_key):
            self.tree.addTopLevelItem(groups[label])
        for name, st in self.computed.items():
            self._decorate(name, st)
        if self.tree.topLevelItemCount():
            first = self.tree.topLevelItem(0)
            first.setExpanded(True)
            if first.childCount():
                self.tree.setCurrentItem(first.child(0))

    def _decorate(self, name: str, st: TensorStats) -> None:
        item = self.items.get(name)
        if item is not None:
            item.setText(1, "×".join(str(x) for x in st.shape))
            item.setText(2, st.qtype)
            item.setText(3, f"{st.relative_error:.4f}")

    def _tensor_done(self, st: TensorStats) -> None:
        name = st.name
        self.computed[name] = st
        self._decorate(name, st)
        cur = self.tree.currentItem()
        if cur is not None and cur.data(0, Qt.ItemDataRole.UserRole) == name and self.current_stats is None:
            self.show_stats(st)

    def _model_done(self, report: services.StatsReport) -> None:
        self._show_layers(report.layers)

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
        self._jobs.append(run_in_thread(services.tensor_stats, *self.paths, name, on_result=self._single_done,
                                        on_error=self.banner.show_message))

    def _single_done(self, st: TensorStats) -> None:
        self.computed.setdefault(st.name, st)
        cur = self.tree.currentItem()
        if cur is not None and cur.data(0, Qt.ItemDataRole.UserRole) == st.name:
            self.show_stats(st)

    # -- showing -----------------------------------------------------------------------------------

    def show_stats(self, stats: TensorStats) -> None:
        self.current_stats = stats
        self.numbers["name"].setText(stats.name)
        self.numbers["rmse"].setText(f"{stats.rmse:.6g}  (relative {stats.relative_error:.4f})")
        self.numbers["max_error"].setText(f"{stats.max_abs_error:.6g}")
        self.numbers["cosine"].setText(f"{stats.cosine:.6f}")
        self.numbers["bpw"].setText(f"{stats.bits_per_weight:.3f}")
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
        for item, plot, h in ((self.weights_hist, self.weights_plot, s.weight_hist),
                              (self.error_hist, self.error_plot, s.error_hist)):
            item.setOpts(**self._bars(h.edges, h.counts, log))
            plot.setLabel("left", "log10(count + 1)" if log else "count")
            plot.autoRange()

    def _show_layers(self, rows: list[services.LayerSummary]) -> None:
        self.layer_rows = [r for r in rows if r.layer is not None]
        xs = [r.layer for r in self.layer_rows]
        heights = [r.relative_error for r in self.layer_rows]
        self.layer_bars.setOpts(x=xs, height=heights, width=0.8)
        step = max(1, len(xs) // 16)  # whole layer numbers, at most 16 of them
        self.layer_plot.getAxis("bottom").setTicks([[(x, str(x)) for x in xs[::step]]])
        self.layer_plot.setLabel("bottom", "layer")
        self.layer_plot.setLabel("left", "relative RMSE")
        self.layer_plot.autoRange()
        self.layers_shown.emit(self.layer_rows)

    # -- export ------------------------------------------------------------------------------------

    def export_figures(self, folder: str | None = None) -> list[pathlib.Path]:
        """The two histograms (named for the tensor) and the per-layer chart (named for the quantized model) as
        PNGs in ``folder``; a name already taken gets a number, nothing is overwritten."""
        import pyqtgraph.exporters as exporters

        folder = folder or QFileDialog.getExistingDirectory(self, "Export figures to")
        if not folder:
            return []
        tensor = self.current_stats.name if self.current_stats else "no-tensor"
        model = pathlib.Path(self.paths[1]).name if self.paths else "model"
        out = []
        for stem, plot in ((f"{tensor}-weights", self.weights_plot), (f"{tensor}-error", self.error_plot),
                           (f"{model}-layers", self.layer_plot)):
            path = free_name(pathlib.Path(folder), f"nibble-{safe_name(stem)}", ".png")
            exporters.ImageExporter(plot.getPlotItem()).export(str(path))
            out.append(path)
        self.banner.show_message(f"Saved {', '.join(p.name for p in out)} in {folder}", "info")
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
            for name in sorted(self.computed, key=lambda n: (layer_label(n) == OTHER, n)):
                t = self.computed[name]
                w.writerow(["tensor", name, t.qtype, t.n_elements, t.bits_per_weight, t.rmse, t.relative_error,
                            t.max_abs_error, t.cosine])
            for r in self.layer_rows:
                w.writerow(["layer", r.layer, "", r.n_elements, r.bits_per_weight, r.rmse, r.relative_error, "",
                            r.min_cosine])
        return p

    def is_busy(self) -> bool:
        return self.job is not None

    def shutdown(self) -> None:
        if self.job is not None:
            self.job.cancel()
