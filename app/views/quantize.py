"""The Quantize wizard: model → format and type (with a live memory estimate) → run → done."""

from __future__ import annotations

import pathlib
import shlex
import time

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import features, sysinfo
from app.features import field
from app.jobs import ProcessJob, engine_argv, format_seconds, run_in_thread
from app.state import AppState, ModelEntry, demo_dir, kind_of
from app.style import fit_colors
from engine.core.units import human_bytes
from app.widgets import Banner, path_size

STEPS = ("Model", "Format and type", "Run", "Done")
STAGE_NAMES = {"convert": "Converting", "imatrix": "Importance matrix", "quantize": "Quantizing",
               "calibrate": "Calibrating", "awq": "AWQ"}
CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
KV_TYPES = ("f16", "q8_0", "q4_0")


# -- step 1: model ---------------------------------------------------------------------------------


class ModelPage(QWidget):
    """Where the model comes from: the Hub, the local cache, a folder, or the demo model."""

    model_chosen = Signal(object)  # ModelEntry

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.entry: ModelEntry | None = None
        self._jobs: list = []
        lay = QVBoxLayout(self)
        self.tabs = QTabWidget()
        lay.addWidget(self.tabs, 1)

        # Hub search
        hub = QWidget()
        hl = QVBoxLayout(hub)
        row = QHBoxLayout()
        self.query = QLineEdit(placeholderText="Search the Hugging Face Hub, e.g. SmolLM2 or Qwen2.5 0.5B")
        self.search_btn = QPushButton("Search")
        row.addWidget(self.query, 1)
        row.addWidget(self.search_btn)
        hl.addLayout(row)
        self.results = QTableWidget(0, 4)
        self.results.setHorizontalHeaderLabels(["Model", "Size", "Downloads", "Access"])
        self._setup_table(self.results)
        hl.addWidget(self.results, 1)
        hrow = QHBoxLayout()
        self.hub_status = QLabel()
        self.download_btn = QPushButton("Download and use")
        self.download_btn.setEnabled(False)
        hrow.addWidget(self.hub_status, 1)
        hrow.addWidget(self.download_btn)
        hl.addLayout(hrow)
        self.tabs.addTab(hub, "Hugging Face Hub")
        self.search_btn.clicked.connect(self.search)
        self.query.returnPressed.connect(self.search)
        self.results.itemSelectionChanged.connect(
            lambda: self.download_btn.setEnabled(bool(self.results.selectedItems()) and self._hub_ok)
        )
        self.download_btn.clicked.connect(self.download_selected)
        self._hub_ok = features.engine_function("hub", "search_models") is not None
        if not self._hub_ok:
            self.hub_status.setText(features.not_available_text("Hub search"))
            self.search_btn.setEnabled(False)

        # Local cache
        cache = QWidget()
        cl = QVBoxLayout(cache)
        self.cache_table = QTableWidget(0, 3)
        self.cache_table.setHorizontalHeaderLabels(["Model", "Size", "Folder"])
        self._setup_table(self.cache_table)
        cl.addWidget(self.cache_table, 1)
        crow = QHBoxLayout()
        self.cache_status = QLabel()
        self.cache_refresh = QPushButton("Refresh")
        self.cache_use = QPushButton("Use this model")
        crow.addWidget(self.cache_status, 1)
        crow.addWidget(self.cache_refresh)
        crow.addWidget(self.cache_use)
        cl.addLayout(crow)
        self.tabs.addTab(cache, "Local cache")
        self.cache_refresh.clicked.connect(self.refresh_cache)
        self.cache_use.clicked.connect(self._use_cached)
        self.cache_table.doubleClicked.connect(lambda _i: self._use_cached())

        # Folder
        folder = QWidget()
        fl = QVBoxLayout(folder)
        frow = QHBoxLayout()
        self.folder_edit = QLineEdit(placeholderText="A folder with config.json and *.safetensors")
        browse = QPushButton("Browse…")
        use_folder = QPushButton("Use this folder")
        frow.addWidget(self.folder_edit, 1)
        frow.addWidget(browse)
        frow.addWidget(use_folder)
        fl.addLayout(frow)
        recent_box = QGroupBox("Recent models")
        rl = QVBoxLayout(recent_box)
        self.recent = QTableWidget(0, 2)
        self.recent.setHorizontalHeaderLabels(["Model", "Folder"])
        self._setup_table(self.recent)
        rl.addWidget(self.recent)
        fl.addWidget(recent_box, 1)
        self.tabs.addTab(folder, "Local folder")
        browse.clicked.connect(self._browse)
        use_folder.clicked.connect(lambda: self.use_path(self.folder_edit.text().strip()))
        self.folder_edit.returnPressed.connect(lambda: self.use_path(self.folder_edit.text().strip()))
        self.recent.doubleClicked.connect(self._use_recent)

        # Demo
        demo = QWidget()
        dl = QVBoxLayout(demo)
        self.demo_label = QLabel()
        self.demo_label.setWordWrap(True)
        self.demo_btn = QPushButton("Try with the demo model")
        dl.addWidget(self.demo_label)
        dl.addWidget(self.demo_btn, 0, Qt.AlignmentFlag.AlignLeft)
        dl.addStretch(1)
        self.tabs.addTab(demo, "Demo model")
        self.demo_btn.clicked.connect(self.use_demo)

        self.chosen = QLabel("No model chosen yet.")
        self.chosen.setWordWrap(True)
        lay.addWidget(self.chosen)
        self.banner = Banner()
        lay.addWidget(self.banner)

        self.refresh_demo()
        self.refresh_recent()
        state.models_changed.connect(self.refresh_recent)
        self.demo_tab = demo
        if not self.state.recent_models() and demo_dir() is not None:
            # First run: nothing to pick yet, so lead with the model that ships with Nibble.
            self.tabs.setCurrentWidget(demo)
            self.chosen.setText("New here? Try Nibble with the demo model: it quantizes in seconds.")

    @staticmethod
    def _setup_table(t: QTableWidget) -> None:
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.verticalHeader().hide()
        t.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)

    # -- sources -----------------------------------------------------------------------------------

    def refresh_demo(self) -> None:
        d = demo_dir()
        if d is None:
            self.demo_label.setText(features.not_available_text("The demo model"))
            self.demo_btn.setEnabled(False)
        else:
            self.demo_label.setText(
                "A small Llama-architecture chat model that ships with Nibble, so you can try every step "
                f"in a minute.\n\n{d}"
            )
            self.demo_btn.setEnabled(True)

    def refresh_recent(self) -> None:
        items = [e for e in self.state.recent_models() if e.kind == "original"]
        self.recent.setRowCount(len(items))
        for r, e in enumerate(items):
            self.recent.setItem(r, 0, QTableWidgetItem(e.name or pathlib.Path(e.path).name))
            it = QTableWidgetItem(e.path)
            it.setData(Qt.ItemDataRole.UserRole, e.path)
            self.recent.setItem(r, 1, it)

    def _use_recent(self, index) -> None:
        it = self.recent.item(index.row(), 1)
        if it:
            self.use_path(it.text())

    def use_demo(self) -> None:
        d = demo_dir()
        if d is not None:
            self.choose(ModelEntry(str(d), "original", name="Nibble demo model"))

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder", self.folder_edit.text())
        if path:
            self.folder_edit.setText(path)
            self.use_path(path)

    def use_path(self, path: str) -> None:
        if not path:
            return
        p = pathlib.Path(path).expanduser()
        if not (p / "config.json").is_file():
            self.banner.show_message(f"{p} has no config.json: choose the folder of a Hugging Face model.")
            return
        self.choose(ModelEntry(str(p), kind_of(p)))

    def choose(self, entry: ModelEntry) -> None:
        self.banner.clear()
        self.entry = entry
        self.chosen.setText(f"<b>Model:</b> {entry.name or pathlib.Path(entry.path).name} — {entry.path}")
        self.state.add_model(entry)
        self.model_chosen.emit(entry)

    # -- hub ---------------------------------------------------------------------------------------

    def search(self) -> None:
        fn = features.engine_function("hub", "search_models")
        if fn is None or not self.query.text().strip():
            return
        self.hub_status.setText("Searching…")
        self.search_btn.setEnabled(False)
        self._jobs.append(run_in_thread(
            fn, self.query.text().strip(), on_result=self._show_results, on_error=self._hub_error,
            on_end=lambda: self.search_btn.setEnabled(True),
        ))

    def _show_results(self, results) -> None:
        results = list(results or [])
        self.results.setRowCount(len(results))
        for r, m in enumerate(results):
            mid = field(m, "id") or field(m, "repo_id") or str(m)
            size = field(m, "safetensors_bytes", field(m, "size_bytes"))
            gated = field(m, "gated", False)
            cells = [mid, human_bytes(size) if size else "—", f"{field(m, 'downloads', 0) or 0:,}",
                     "gated — needs access" if gated else "open"]
            for c, text in enumerate(cells):
                it = QTableWidgetItem(str(text))
                if c == 0:
                    it.setData(Qt.ItemDataRole.UserRole, mid)
                self.results.setItem(r, c, it)
        self.hub_status.setText(f"{len(results)} models" if results else "Nothing found.")

    def _hub_error(self, message: str) -> None:
        self.hub_status.setText("")
        self.banner.show_message(message)

    def download_selected(self) -> None:
        fn = features.engine_function("hub", "download_model")
        rows = self.results.selectionModel().selectedRows()
        if fn is None or not rows:
            return
        repo = self.results.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        self.hub_status.setText(f"Downloading {repo}…")
        self.download_btn.setEnabled(False)

        def progress(done, total, msg):
            self.hub_status.setText(f"Downloading {repo}: {human_bytes(done)} of {human_bytes(total)}")

        self._jobs.append(run_in_thread(
            fn, repo, pass_reporter=True, on_progress=progress,
            on_result=lambda path: (self.hub_status.setText(f"Downloaded {repo}."),
                                    self.choose(ModelEntry(str(path), "original", name=repo))),
            on_error=self._hub_error, on_end=lambda: self.download_btn.setEnabled(True),
        ))

    # -- cache -------------------------------------------------------------------------------------

    def refresh_cache(self) -> None:
        fn = features.engine_function("hub", "list_cached_models")
        if fn is None:
            self.cache_status.setText(features.not_available_text("The local cache listing"))
            return
        self.cache_status.setText("Reading the cache…")
        self._jobs.append(run_in_thread(fn, on_result=self._show_cache, on_error=self._hub_error))

    def _show_cache(self, models) -> None:
        models = list(models or [])
        self.cache_table.setRowCount(len(models))
        for r, m in enumerate(models):
            path = str(field(m, "path", ""))
            name = field(m, "id") or pathlib.Path(path).name
            size = field(m, "size_bytes", field(m, "size"))
            for c, text in enumerate((name, human_bytes(size) if size else "—", path)):
                it = QTableWidgetItem(str(text))
                it.setData(Qt.ItemDataRole.UserRole, path)
                self.cache_table.setItem(r, c, it)
        self.cache_status.setText(f"{len(models)} models in the cache" if models else "The cache is empty.")

    def _use_cached(self) -> None:
        rows = self.cache_table.selectionModel().selectedRows()
        if rows:
            it = self.cache_table.item(rows[0].row(), 0)
            path = it.data(Qt.ItemDataRole.UserRole)
            self.choose(ModelEntry(path, kind_of(path), name=it.text()))

    def activated(self) -> None:
        if self.cache_table.rowCount() == 0:
            self.refresh_cache()


# -- step 2: format and type -----------------------------------------------------------------------


def load_and_warm_plan(load_plan, path: str, types: list[str]):
    """Read the model's headers, then size every type once (worker thread): the per-type tensor layouts
    are cached in the plan, so the estimates that follow each change on the UI thread are arithmetic only."""
    plan = load_plan(path)
    prepare = features.engine_function("estimate", "prepare")
    if prepare is not None:
        prepare(plan)
    else:
        est = features.engine_function("estimate", "estimate")
        for t in types:
            try:
                est(plan, t)
            except Exception:
                pass
    return plan


FIT_TEXT = {"fits": "fits", "tight": "tight", "no": "does not fit", "": "—"}


class FormatPage(QWidget):
    """GGUF types in a table with a live estimate, or AWQ; device, imatrix and output options."""

    changed = Signal()

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model: ModelEntry | None = None
        self.plan = None
        self.plan_error = ""
        self.types: list = []
        self.devices: list[sysinfo.Device] = []
        self._jobs: list = []
        self._output_touched = False

        lay = QVBoxLayout(self)
        fmt_row = QHBoxLayout()
        self.gguf_radio = QRadioButton("GGUF (llama.cpp, Ollama, LM Studio)")
        self.awq_radio = QRadioButton("AWQ 4-bit (transformers, vLLM)")
        self.gguf_radio.setChecked(True)
        grp = QButtonGroup(self)
        grp.addButton(self.gguf_radio)
        grp.addButton(self.awq_radio)
        fmt_row.addWidget(QLabel("<b>Format:</b>"))
        fmt_row.addWidget(self.gguf_radio)
        fmt_row.addWidget(self.awq_radio)
        fmt_row.addStretch(1)
        lay.addLayout(fmt_row)

        body = QHBoxLayout()
        lay.addLayout(body, 1)
        left = QVBoxLayout()
        body.addLayout(left, 3)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["Type", "Bits/weight", "File size", "Memory to run", "This machine", "Notes"])
        ModelPage._setup_table(self.table)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        left.addWidget(self.table, 1)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        left.addWidget(self.estimate_label)

        right = QVBoxLayout()
        body.addLayout(right, 2)
        run_box = QGroupBox("Running it")
        rf = QFormLayout(run_box)
        self.ctx = QComboBox()
        for c in CONTEXTS:
            self.ctx.addItem(f"{c:,} tokens", c)
        self.ctx.setCurrentIndex(CONTEXTS.index(4096))
        self.kv = QComboBox()
        self.kv.addItems(KV_TYPES)
        self.device = QComboBox()
        self.gpu_layers = QSpinBox()
        self.gpu_layers.setRange(0, 999)
        self.gpu_layers.setSpecialValueText("0 (CPU only)")
        rf.addRow("Context:", self.ctx)
        rf.addRow("KV cache type:", self.kv)
        rf.addRow("Device:", self.device)
        rf.addRow("GPU layers:", self.gpu_layers)
        self.device_note = QLabel()
        self.device_note.setWordWrap(True)
        rf.addRow(self.device_note)
        right.addWidget(run_box)

        cal_box = QGroupBox("Importance matrix")
        cf = QFormLayout(cal_box)
        self.imatrix_mode = QComboBox()
        self.imatrix_mode.addItem("None", "none")
        self.imatrix_mode.addItem("Compute from calibration text", "calibration")
        self.imatrix_mode.addItem("Use an imatrix file", "imatrix")
        self.imatrix_path = QLineEdit(placeholderText="built-in calibration text")
        pick = QPushButton("…")
        pick.setFixedWidth(32)
        prow = QHBoxLayout()
        prow.addWidget(self.imatrix_path, 1)
        prow.addWidget(pick)
        cf.addRow("Source:", self.imatrix_mode)
        cf.addRow("File:", prow)
        right.addWidget(cal_box)

        out_box = QGroupBox("Output")
        of = QFormLayout(out_box)
        self.output = QLineEdit()
        out_pick = QPushButton("…")
        out_pick.setFixedWidth(32)
        orow = QHBoxLayout()
        orow.addWidget(self.output, 1)
        orow.addWidget(out_pick)
        self.threads = QSpinBox()
        import os

        self.threads.setRange(1, max(1, os.cpu_count() or 1))
        self.threads.setValue(max(1, os.cpu_count() or 1))
        of.addRow("Save to:", orow)
        of.addRow("Threads:", self.threads)
        right.addWidget(out_box)
        right.addStretch(1)
        self.banner = Banner()
        lay.addWidget(self.banner)

        for w in (self.ctx, self.kv, self.device):
            w.currentIndexChanged.connect(self.update_estimates)
        self.device.currentIndexChanged.connect(self._device_changed)
        self.gpu_layers.setEnabled(False)
        self.gpu_layers.valueChanged.connect(self.update_estimates)
        self.table.itemSelectionChanged.connect(self._type_changed)
        self.gguf_radio.toggled.connect(self._format_changed)
        self.imatrix_mode.currentIndexChanged.connect(self._imatrix_mode_changed)
        pick.clicked.connect(self._pick_imatrix)
        out_pick.clicked.connect(self._pick_output)
        self.output.textEdited.connect(lambda _t: setattr(self, "_output_touched", True))
        self._imatrix_mode_changed()
        self._restore_choices()
        self._load_types()
        self.machine = None
        self._probe = None

    def probe_machine(self) -> None:
        """Devices and free RAM, VRAM and disk (at the output folder), read in a child process."""
        folder = str(pathlib.Path(self.output.text() or ".").parent)
        self._probe = sysinfo.probe_in_child(folder, self._probed, self)

    def showEvent(self, event) -> None:
        if self._probe is None:
            self.probe_machine()
        super().showEvent(event)

    def _probed(self, devices, machine) -> None:
        self.machine = machine
        self._set_devices(devices)

    # -- data --------------------------------------------------------------------------------------

    def _load_types(self) -> None:
        fn = features.engine_function("gguf.quantize", "quant_types")
        if fn is None:
            self.types = []
            self.banner.show_message(features.not_available_text("GGUF quantization"), "warn")
        else:
            self.types = [t for t in fn() if str(field(t, "name", "")).upper() != "AWQ"]
        self.table.setRowCount(len(self.types))
        for r, t in enumerate(self.types):
            name = str(field(t, "name"))
            item = QTableWidgetItem(name)
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.table.setItem(r, 0, item)
            bpw = field(t, "bits_per_weight", field(t, "bpw"))
            self.table.setItem(r, 1, QTableWidgetItem(f"{bpw:.2f}" if isinstance(bpw, (int, float)) else "—"))
            notes = []
            if field(t, "needs_imatrix", False):
                notes.append("needs an importance matrix")
            desc = field(t, "description", "")
            if desc:
                notes.append(str(desc))
            self.table.setItem(r, 5, QTableWidgetItem("; ".join(notes)))
            for c in (2, 3, 4):
                self.table.setItem(r, c, QTableWidgetItem("…"))
        want = self.state.value("quantize/type", "Q4_K_M")
        self.select_type(want) or (self.table.rowCount() and self.table.selectRow(0))

    def _set_devices(self, devices) -> None:
        self.devices = list(devices)
        self.device.blockSignals(True)
        self.device.clear()
        for d in self.devices:
            label = d.label + ("" if d.usable else f" — {d.note}")
            self.device.addItem(label, d.key)
            if not d.usable:
                item = self.device.model().item(self.device.count() - 1)
                item.setEnabled(False)
        self.device.blockSignals(False)
        self.update_estimates()

    def set_model(self, entry: ModelEntry) -> None:
        if self.model and self.model.path == entry.path and (self.plan is not None or self.plan_error):
            return
        self.model = entry
        self.plan = None
        self.plan_error = ""
        if not self._output_touched:
            self._default_output()
        fn = features.engine_function("estimate", "load_plan")
        if fn is None:
            self.plan_error = features.not_available_text("The memory estimate")
            self.update_estimates()
            return
        self.update_estimates()
        path = entry.path
        names = [str(field(t, "name")) for t in self.types]
        self._jobs.append(run_in_thread(
            load_and_warm_plan, fn, path, names, on_result=lambda plan: self._plan_ready(path, plan),
            on_error=lambda msg: self._plan_failed(path, msg),
        ))

    def _plan_ready(self, path: str, plan) -> None:
        if self.model and self.model.path == path:
            self.plan = plan
            self.update_estimates()

    def _plan_failed(self, path: str, message: str) -> None:
        if self.model and self.model.path == path:
            self.plan_error = message
            self.update_estimates()

    # -- choices -----------------------------------------------------------------------------------

    def is_awq(self) -> bool:
        return self.awq_radio.isChecked()

    def selected_type(self) -> str | None:
        if self.is_awq():
            return "AWQ"
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def select_type(self, name: str) -> bool:
        if str(name).upper() == "AWQ":
            self.awq_radio.setChecked(True)
            return True
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() == name:
                self.gguf_radio.setChecked(True)
                self.table.selectRow(r)
                return True
        return False

    def context(self) -> int:
        return int(self.ctx.currentData())

    def _device_changed(self) -> None:
        gpu = self.device.currentData() not in (None, "cpu")
        self.gpu_layers.setEnabled(gpu)
        if gpu and self.gpu_layers.value() == 0:
            self.gpu_layers.setValue(999)
        elif not gpu:
            self.gpu_layers.setValue(0)

    def _type_changed(self) -> None:
        t = self.selected_type()
        if t:
            self.state.set_value("quantize/type", t)
            needs = any(str(field(x, "name")) == t and field(x, "needs_imatrix", False) for x in self.types)
            if needs and self.imatrix_mode.currentData() == "none":
                self.imatrix_mode.setCurrentIndex(1)
        if not self._output_touched:
            self._default_output()
        self.update_estimates()
        self.changed.emit()

    def _format_changed(self) -> None:
        self.table.setEnabled(not self.is_awq())
        if not self._output_touched:
            self._default_output()
        self.update_estimates()
        self.changed.emit()

    def _imatrix_mode_changed(self) -> None:
        mode = self.imatrix_mode.currentData()
        self.imatrix_path.setEnabled(mode != "none")
        self.imatrix_path.setPlaceholderText("built-in calibration text" if mode == "calibration" else "imatrix.gguf")

    def _pick_imatrix(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file")
        if path:
            self.imatrix_path.setText(path)

    def _pick_output(self) -> None:
        if self.is_awq():
            path = QFileDialog.getExistingDirectory(self, "Save the AWQ model in")
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Save the GGUF file as", self.output.text(), "GGUF (*.gguf)")
        if path:
            self.output.setText(path)
            self._output_touched = True

    def _default_output(self) -> None:
        if self.model is None:
            return
        src = pathlib.Path(self.model.path)
        base = pathlib.Path(self.state.value("quantize/output_dir", str(src.parent)))
        t = self.selected_type() or "Q4_K_M"
        name = src.name
        self.output.setText(str(base / (f"{name}-AWQ" if t == "AWQ" else f"{name}-{t}.gguf")))

    def _restore_choices(self) -> None:
        ctx = self.state.value("quantize/ctx", 4096, int)
        if ctx in CONTEXTS:
            self.ctx.setCurrentIndex(CONTEXTS.index(ctx))
        kv = self.state.value("quantize/kv", "f16")
        if kv in KV_TYPES:
            self.kv.setCurrentIndex(KV_TYPES.index(kv))
        if self.state.value("quantize/format", "gguf") == "awq":
            self.awq_radio.setChecked(True)

    def save_choices(self) -> None:
        self.state.set_value("quantize/ctx", self.context())
        self.state.set_value("quantize/kv", self.kv.currentText())
        self.state.set_value("quantize/format", "awq" if self.is_awq() else "gguf")
        out = pathlib.Path(self.output.text())
        if self.output.text():
            self.state.set_value("quantize/output_dir", str(out.parent))

    # -- estimate ----------------------------------------------------------------------------------

    def _estimate(self, qtype: str):
        fn = features.engine_function("estimate", "estimate")
        if fn is None or self.plan is None:
            return None
        try:
            return fn(self.plan, qtype, ctx=self.context(), kv_type=self.kv.currentText(),
                      gpu_layers=self.gpu_layers.value(), machine=self.machine)
        except Exception as exc:  # a type this estimate cannot size: say so in place
            return {"error": str(exc)}

    @staticmethod
    def run_bytes(est) -> int:
        run = field(est, "run")
        return int(field(run, "ram_bytes", 0) + field(run, "vram_bytes", 0))

    def fit_of(self, est) -> str:
        """"fits", "tight" or "no" on this machine (tight: it fits with under a fifth of the memory to spare)."""
        fit, m = field(est, "fit"), self.machine
        if fit is None or m is None:
            return ""
        if not field(fit, "run_fits", field(fit, "fits", True)):
            return "no"
        run = field(est, "run")
        ram, vram = field(run, "ram_bytes", 0), field(run, "vram_bytes", 0)
        if ram > 0.8 * m.free_ram_bytes or (vram and vram > 0.8 * m.free_vram_bytes):
            return "tight"
        return "fits"

    def update_estimates(self) -> None:
        """Fill the size / memory / fit columns; arithmetic only, so it runs on every change."""
        colours = fit_colors()
        waiting = self.plan is None and not self.plan_error and self.model is not None
        for r in range(self.table.rowCount()):
            name = self.table.item(r, 0).text()
            est = self._estimate(name)
            if est is None or field(est, "error"):
                for c in (2, 3, 4):
                    self.table.item(r, c).setText("…" if waiting else "—")
                continue
            self.table.item(r, 1).setText(f"{field(est, 'bits_per_weight'):.2f}")
            self.table.item(r, 2).setText(human_bytes(field(est, "file_bytes")))
            self.table.item(r, 3).setText(human_bytes(self.run_bytes(est)))
            mark = self.fit_of(est)
            item = self.table.item(r, 4)
            item.setText(FIT_TEXT.get(mark, "—"))
            if mark in colours:
                item.setForeground(colours[mark])
            fit = field(est, "fit")
            item.setToolTip("; ".join(field(fit, "problems", ()) or ()) if fit else "")
        self._summary()

    def _summary(self) -> None:
        if self.model is None:
            self.estimate_label.setText("Choose a model first.")
            return
        if self.plan_error:
            self.estimate_label.setText(self.plan_error)
            return
        if self.plan is None:
            self.estimate_label.setText("Reading the model's tensors to estimate sizes…")
            return
        t = self.selected_type()
        if t == "AWQ":
            cost = features.engine_function("estimate", "awq_cost")
            if cost is not None:
                c = cost(self.plan)
                self.estimate_label.setText(
                    f"<b>AWQ 4-bit</b>: checkpoint about {human_bytes(c['checkpoint_bytes'])}, calibration needs "
                    f"about {human_bytes(c['calibration_peak_ram_bytes'])} of RAM")
            return
        est = self._estimate(t) if t else None
        if est is None or field(est, "error"):
            self.estimate_label.setText(field(est, "error", "") if est else "")
            return
        run = field(est, "run")
        parts = [
            f"<b>{t}</b>: file {human_bytes(field(est, 'file_bytes'))} ({field(est, 'bits_per_weight'):.2f} bits/weight)",
            f"to run at {self.context():,} tokens: {human_bytes(self.run_bytes(est))} "
            f"(KV cache {human_bytes(field(run, 'kv_cache_bytes'))}"
            + (f", {human_bytes(field(run, 'vram_bytes'))} on the GPU" if field(run, "vram_bytes") else "") + ")",
        ]
        mark = self.fit_of(est)
        if mark:
            parts.append(f"this machine: <b>{FIT_TEXT[mark]}</b>")
        fit = field(est, "fit")
        if fit is not None and field(fit, "suggestion_text"):
            parts.append(f"suggestion: {field(fit, 'suggestion_text')}")
        self.estimate_label.setText(" · ".join(parts))

    # -- the command -------------------------------------------------------------------------------

    def command(self) -> list[str] | None:
        """The engine command for the current choices, or None (with a message) when incomplete."""
        self.banner.clear()
        if self.model is None:
            self.banner.show_message("Choose a model first.")
            return None
        t = self.selected_type()
        if not t:
            self.banner.show_message("Choose a quantization type.")
            return None
        out = self.output.text().strip()
        if not out:
            self.banner.show_message("Choose where to save the result.")
            return None
        args = [self.model.path, "--type", t, "--out", out, "--threads", str(self.threads.value())]
        mode = self.imatrix_mode.currentData()
        path = self.imatrix_path.text().strip()
        if t == "AWQ":  # AWQ always calibrates: on the given text, else on Nibble's own
            if path and mode == "calibration":
                args += ["--calibration", path]
            return engine_argv("quantize", *args)
        if mode == "imatrix":
            if not path:
                self.banner.show_message("Choose the imatrix file, or pick another importance matrix source.")
                return None
            args += ["--imatrix", path]
        elif mode == "calibration":
            args += ["--calibration", path or "default"]
        return engine_argv("quantize", *args)


# -- step 3: run -----------------------------------------------------------------------------------


class RunPage(QWidget):
    finished = Signal(dict)  # the engine's done event, plus "elapsed"
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.job: ProcessJob | None = None
        self.outcome = ""  # "", "running", "done", "failed" or "cancelled"
        self.started = 0.0
        lay = QVBoxLayout(self)
        self.title = QLabel()
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        lay.addWidget(self.bar)
        row = QHBoxLayout()
        self.status = QLabel("Starting…")
        self.eta = QLabel()
        row.addWidget(self.status, 1)
        row.addWidget(self.eta)
        lay.addLayout(row)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        lay.addWidget(self.log, 1)
        self.banner = Banner()
        lay.addWidget(self.banner)
        brow = QHBoxLayout()
        brow.addStretch(1)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setShortcut("Esc")
        brow.addWidget(self.cancel_btn)
        lay.addLayout(brow)
        self.cancel_btn.clicked.connect(self.cancel)

    def start(self, argv: list[str], title: str) -> ProcessJob:
        self.title.setText(title)
        self.banner.clear()
        self.log.clear()
        self.bar.setRange(0, 0)
        self.status.setText("Starting…")
        self.eta.clear()
        self.cancel_btn.setEnabled(True)
        self.outcome = "running"
        self.started = time.monotonic()
        self.job = ProcessJob(argv, self)
        if "--out" in argv:
            out = pathlib.Path(argv[argv.index("--out") + 1])
            # the engine's temporaries are ".NAME.TAG.PID.tmp" next to the output
            self.job.leftovers = lambda pid: list(out.parent.glob(f".{out.name}.*.{pid}.tmp"))
        self.job.progress.connect(self._progress)
        self.job.log.connect(self.log.appendPlainText)
        self.job.succeeded.connect(self._succeeded)
        self.job.failed.connect(self._failed)
        self.job.cancelled.connect(self._cancelled)
        self.job.start()
        return self.job

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def cancel(self) -> None:
        if self.job is not None:
            self.cancel_btn.setEnabled(False)
            self.status.setText("Cancelling…")
            self.job.cancel()

    def _progress(self, done: int, total: int, message: str, eta: float) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(done)
            self.bar.setFormat(f"{done} / {total}")
        stage = STAGE_NAMES.get(self.job.stage, self.job.stage.capitalize()) if self.job else ""
        same = stage and message.lower().startswith(stage.lower())
        self.status.setText(f"{stage}: {message}" if stage and not same else message)
        self.eta.setText(f"elapsed {format_seconds(time.monotonic() - self.started)}, left {format_seconds(eta if eta >= 0 else None)}")

    def _succeeded(self, result: dict) -> None:
        self.outcome = "done"
        self.cancel_btn.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        out = dict(result)
        out["elapsed"] = time.monotonic() - self.started
        self.finished.emit(out)

    def _stopped(self, outcome: str, status: str) -> None:
        """A failed or cancelled job: the page says so and waits for the next one (Back or Quantize again)."""
        self.cancel_btn.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("")
        self.eta.clear()
        self.title.setText(self.title.text().removesuffix("…") + f": {outcome}.")
        self.status.setText(status)
        self.outcome = outcome

    def _failed(self, message: str) -> None:
        self._stopped("failed", "Failed; nothing was written.")
        self.banner.show_message(f"Quantization failed: {message}")
        self.failed.emit(message)

    def _cancelled(self) -> None:
        self._stopped("cancelled", "Cancelled; nothing was written.")
        self.cancelled.emit()

    def stopped_without_result(self) -> bool:
        """The last job failed or was cancelled (so the same settings can be run again)."""
        return self.outcome in ("failed", "cancelled")


# -- step 4: done ----------------------------------------------------------------------------------


def run_commands(path: str, kind: str) -> dict[str, str]:
    """Commands that run the output elsewhere: llama.cpp and Ollama for GGUF, transformers for AWQ."""
    q = shlex.quote(path)
    if kind == "awq":
        return {
            "transformers": (
                "python -c \"from transformers import AutoModelForCausalLM, AutoTokenizer; "
                f"m = AutoModelForCausalLM.from_pretrained({path!r}); print(m)\""
            ),
            "vLLM": f"vllm serve {q} --quantization awq",
        }
    stem = pathlib.Path(path).stem.lower().replace("_", "-").replace(".", "-")
    return {
        "llama.cpp": f"llama-cli -m {q} -cnv",
        "Ollama": f"printf 'FROM %s\\n' {q} > Modelfile && ollama create {stem} -f Modelfile && ollama run {stem}",
    }


class DonePage(QWidget):
    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.output: ModelEntry | None = None
        self.original: ModelEntry | None = None
        lay = QVBoxLayout(self)
        self.headline = QLabel("<h2>Done</h2>")
        lay.addWidget(self.headline)
        form = QFormLayout()
        self.path_label = QLabel()
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setWordWrap(True)
        self.size_label = QLabel()
        self.time_label = QLabel()
        form.addRow("File:", self.path_label)
        form.addRow("Size:", self.size_label)
        form.addRow("Time taken:", self.time_label)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.chat_btn = QPushButton("Open in Chat")
        self.compare_btn = QPushButton("Compare with the original")
        self.analyse_btn = QPushButton("Analyse")
        self.show_btn = QPushButton("Show in file manager")
        for b in (self.chat_btn, self.compare_btn, self.analyse_btn, self.show_btn):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.cmd_box = QGroupBox("Run it elsewhere")
        self.cmd_layout = QFormLayout(self.cmd_box)
        lay.addWidget(self.cmd_box)
        lay.addStretch(1)
        self.chat_btn.clicked.connect(lambda: self.state.open_in("Chat", model=self.output.path))
        self.compare_btn.clicked.connect(
            lambda: self.state.open_in("Compare", original=self.original.path, quantized=self.output.path)
        )
        self.analyse_btn.clicked.connect(
            lambda: self.state.open_in("Analysis", original=self.original.path, quantized=self.output.path)
        )
        self.show_btn.clicked.connect(self.show_in_file_manager)

    def show_result(self, original: ModelEntry, output: ModelEntry, result: dict) -> None:
        self.original, self.output = original, output
        p = pathlib.Path(output.path)
        size = result.get("file_bytes", result.get("size_bytes"))
        if size is None and p.exists():
            size = path_size(p)
        self.headline.setText(f"<h2>{output.qtype} of {pathlib.Path(original.path).name} is ready</h2>")
        self.path_label.setText(str(p))
        self.size_label.setText(human_bytes(size))
        self.time_label.setText(format_seconds(result.get("elapsed")))
        while self.cmd_layout.rowCount():
            self.cmd_layout.removeRow(0)
        self.commands = run_commands(str(p), output.kind)
        for name, cmd in self.commands.items():
            line = QLineEdit(cmd, readOnly=True)
            copy = QPushButton("Copy")
            copy.clicked.connect(lambda _=False, c=cmd: QGuiApplication.clipboard().setText(c))
            row = QHBoxLayout()
            row.addWidget(line, 1)
            row.addWidget(copy)
            self.cmd_layout.addRow(f"{name}:", row)

    def show_in_file_manager(self) -> None:
        if self.output:
            p = pathlib.Path(self.output.path)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(p.parent if p.is_file() else p)))


# -- the wizard ------------------------------------------------------------------------------------


class QuantizeWizard(QWidget):
    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        lay = QVBoxLayout(self)
        self.steps = QLabel()
        lay.addWidget(self.steps)
        self.pages = QStackedWidget()
        lay.addWidget(self.pages, 1)
        self.model_page = ModelPage(state)
        self.format_page = FormatPage(state)
        self.run_page = RunPage()
        self.done_page = DonePage(state)
        for p in (self.model_page, self.format_page, self.run_page, self.done_page):
            self.pages.addWidget(p)
        nav = QHBoxLayout()
        self.back_btn = QPushButton("Back")
        self.next_btn = QPushButton("Next")
        self.next_btn.setDefault(True)
        self.back_btn.setShortcut("Alt+Left")
        self.next_btn.setShortcut("Ctrl+Return")
        nav.addStretch(1)
        nav.addWidget(self.back_btn)
        nav.addWidget(self.next_btn)
        lay.addLayout(nav)
        self.back_btn.clicked.connect(self.back)
        self.next_btn.clicked.connect(self.next)
        self.model_page.model_chosen.connect(self._model_chosen)
        self.run_page.finished.connect(self._finished)
        self.run_page.failed.connect(lambda _m: self._update_nav())
        self.run_page.cancelled.connect(self._update_nav)
        self.original: ModelEntry | None = None
        self._go(0)

    def step(self) -> int:
        return self.pages.currentIndex()

    def _go(self, i: int) -> None:
        self.pages.setCurrentIndex(i)
        marks = []
        for n, s in enumerate(STEPS):
            marks.append(f"<b>{n + 1}. {s}</b>" if n == i else f"{n + 1}. {s}")
        self.steps.setText("  ›  ".join(marks))
        self._update_nav()

    def _update_nav(self) -> None:
        i = self.step()
        running = self.run_page.is_running()
        again = i == 2 and not running and self.run_page.stopped_without_result()
        self.back_btn.setEnabled(i in (1, 3) or (i == 2 and not running))
        self.next_btn.setVisible(i < 2 or i == 3 or again)
        self.next_btn.setText({0: "Next", 1: "Quantize", 2: "Quantize again", 3: "New quantization"}.get(i, "Next"))
        self.next_btn.setEnabled(i != 0 or self.original is not None)

    def _model_chosen(self, entry: ModelEntry) -> None:
        self.original = entry
        self.format_page.set_model(entry)
        self._update_nav()

    def back(self) -> None:
        i = self.step()
        if i == 2 and self.run_page.is_running():
            return
        self._go(1 if i >= 2 else 0)

    def next(self) -> None:
        i = self.step()
        if i == 0 and self.original is not None:
            self._go(1)
        elif i == 1 or (i == 2 and not self.run_page.is_running()):
            self.start_run()
        elif i == 3:
            self.restart()

    def restart(self) -> None:
        if not self.run_page.is_running():
            self._go(0 if self.original is None else 1)

    def start_run(self) -> bool:
        argv = self.format_page.command()
        if argv is None:
            return False
        self.format_page.save_choices()
        t = self.format_page.selected_type()
        self._go(2)
        self.run_page.start(argv, f"Quantizing {pathlib.Path(self.original.path).name} to {t}…")
        self.run_page.job.ended.connect(self._update_nav)
        self._update_nav()
        return True

    def _finished(self, result: dict) -> None:
        out = result.get("output") or result.get("path") or self.format_page.output.text()
        t = self.format_page.selected_type() or ""
        entry = ModelEntry(str(out), "awq" if t == "AWQ" else "gguf", origin=self.original.path, qtype=t)
        self.state.add_model(entry)
        self.done_page.show_result(self.original, entry, result)
        self._go(3)

    def open_payload(self, payload: dict) -> None:
        path = payload.get("model")
        if path and not self.run_page.is_running():
            self.model_page.choose(ModelEntry(path, kind_of(path)))
            self._go(1)

    # -- window hooks ------------------------------------------------------------------------------

    def activated(self) -> None:
        if self.step() == 0:
            self.model_page.activated()

    def is_busy(self) -> bool:
        return self.run_page.is_running()

    def shutdown(self) -> None:
        if self.run_page.is_running():
            self.run_page.cancel()
            self.run_page.job.proc.waitForFinished(5000)
