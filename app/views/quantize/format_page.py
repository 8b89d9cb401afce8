"""Step 2 of the Quantize wizard: GGUF type (a table with a live estimate) or AWQ; device, imatrix, output."""

from __future__ import annotations

import os
import pathlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import services, sysinfo
from app.jobs import engine_argv, run_in_thread
from app.services import Estimate, human_bytes
from app.settings import QUANTIZE_CTX, QUANTIZE_FORMAT, QUANTIZE_KV, QUANTIZE_OUTPUT_DIR, QUANTIZE_TYPE
from app.state import AppState, ModelEntry
from app.style import fit_colors
from app.views.quantize.model_page import setup_table
from app.views.quantize.size_target import SizeTargetPanel
from app.widgets import Banner

CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
KV_TYPES = ("f16", "q8_0", "q4_0")
AWQ_TYPE = "AWQ"  # the type name the quantize command takes for AWQ 4-bit


FIT_TEXT = {"fits": "fits", "tight": "tight", "no": "does not fit"}  # engine.estimate.Fit.verdict in words


class FormatPage(QWidget):
    """GGUF types in a table with a live estimate, or AWQ; device, imatrix and output options."""

    changed = Signal()

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model: ModelEntry | None = None
        self.plan = None
        self.plan_error = ""
        self.types: list[services.QuantType] = []
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
        setup_table(self.table)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        left.addWidget(self.table, 1)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        left.addWidget(self.estimate_label)
        self.mix = SizeTargetPanel()
        left.addWidget(self.mix)

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
        self.mix.changed.connect(self._mix_changed)
        self.imatrix_path.editingFinished.connect(self._mix_model)
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
        try:
            self.types = services.gguf_types()
        except services.NibbleError as exc:  # llama.cpp is not usable: say so, AWQ still works
            self.types = []
            self.banner.show_message(str(exc), "warn")
        self.table.setRowCount(len(self.types))
        for r, t in enumerate(self.types):
            item = QTableWidgetItem(t.name)
            item.setData(Qt.ItemDataRole.UserRole, t.name)
            self.table.setItem(r, 0, item)
            notes = (["needs an importance matrix"] if t.needs_imatrix else []) + ([t.description] if t.description else [])
            self.table.setItem(r, 5, QTableWidgetItem("; ".join(notes)))
            for c in (1, 2, 3, 4):
                self.table.setItem(r, c, QTableWidgetItem("…"))
        want = self.state.get(QUANTIZE_TYPE)
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
        self._mix_model()
        if not self._output_touched:
            self._default_output()
        self.update_estimates()
        path = entry.path
        # Reading the headers and laying out every type is the slow part (a worker thread); the estimates that
        # follow each change on the UI thread are arithmetic only.
        self._jobs.append(run_in_thread(
            services.load_plan, path, on_result=lambda plan: self._plan_ready(path, plan),
            on_error=lambda msg: self._plan_failed(path, msg),
        ))

    def _plan_ready(self, path: str, plan) -> None:
        if self.model and self.model.path == path:
            self.plan = plan
            self._mix_model()
            self._type_changed()

    def _plan_failed(self, path: str, message: str) -> None:
        if self.model and self.model.path == path:
            self.plan_error = message
            self.update_estimates()

    # -- choices -----------------------------------------------------------------------------------

    def is_awq(self) -> bool:
        return self.awq_radio.isChecked()

    def uses_mix(self) -> bool:
        """The run writes the best mix for the panel's size instead of one uniform type."""
        return not self.is_awq() and self.mix.isChecked()

    def selected_type(self) -> str | None:
        if self.is_awq():
            return AWQ_TYPE
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def select_type(self, name: str) -> bool:
        if str(name).upper() == AWQ_TYPE:
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

    def _mix_model(self) -> None:
        """The mix panel follows the model, its plan and the calibration text it is measured on."""
        text = self.imatrix_path.text().strip() if self.imatrix_mode.currentData() == "calibration" else ""
        self.mix.set_model(self.model.path if self.model else None, self.plan, text or None)

    def _mix_changed(self) -> None:
        if not self._output_touched:
            self._default_output()
        self.changed.emit()

    def _type_changed(self) -> None:
        t = self.selected_type()
        est = self._estimate(t) if t and t != AWQ_TYPE else None
        self.mix.set_reference(t, est.file_bytes if isinstance(est, Estimate) else None)
        if t:
            self.state.put(QUANTIZE_TYPE, t)
            needs = any(x.name == t and x.needs_imatrix for x in self.types)
            if needs and self.imatrix_mode.currentData() == "none":
                self.imatrix_mode.setCurrentIndex(1)
        if not self._output_touched:
            self._default_output()
        self.update_estimates()
        self.changed.emit()

    def _format_changed(self) -> None:
        self.table.setEnabled(not self.is_awq())
        self.mix.setEnabled(not self.is_awq())
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
        base = pathlib.Path(self.state.get(QUANTIZE_OUTPUT_DIR) or src.parent)
        t = self.selected_type() or QUANTIZE_TYPE.default
        if self.uses_mix():
            t = f"mix-{self.mix.target_bytes() / 1e6:.0f}MB"
        name = src.name
        self.output.setText(str(base / (f"{name}-AWQ" if t == AWQ_TYPE else f"{name}-{t}.gguf")))

    def _restore_choices(self) -> None:
        ctx = self.state.get(QUANTIZE_CTX)
        if ctx in CONTEXTS:
            self.ctx.setCurrentIndex(CONTEXTS.index(ctx))
        kv = self.state.get(QUANTIZE_KV)
        if kv in KV_TYPES:
            self.kv.setCurrentIndex(KV_TYPES.index(kv))
        if self.state.get(QUANTIZE_FORMAT) == services.AWQ:
            self.awq_radio.setChecked(True)

    def save_choices(self) -> None:
        self.state.put(QUANTIZE_CTX, self.context())
        self.state.put(QUANTIZE_KV, self.kv.currentText())
        self.state.put(QUANTIZE_FORMAT, services.AWQ if self.is_awq() else services.GGUF)
        if self.output.text():
            self.state.put(QUANTIZE_OUTPUT_DIR, str(pathlib.Path(self.output.text()).parent))

    # -- estimate ----------------------------------------------------------------------------------

    def _estimate(self, qtype: str) -> Estimate | str | None:
        """The estimate for ``qtype`` at the chosen settings, the reason there is none, or None (no plan yet)."""
        if self.plan is None:
            return None
        return services.estimate_or_error(self.plan, qtype, ctx=self.context(), kv_type=self.kv.currentText(),
                                          gpu_layers=self.gpu_layers.value(), machine=self.machine)

    def update_estimates(self) -> None:
        """Fill the size / memory / fit columns; arithmetic only, so it runs on every change."""
        colours = fit_colors()
        waiting = self.plan is None and not self.plan_error and self.model is not None
        for r in range(self.table.rowCount()):
            est = self._estimate(self.table.item(r, 0).text())
            if not isinstance(est, Estimate):
                for c in (2, 3, 4):
                    self.table.item(r, c).setText("…" if waiting else "—")
                continue
            self.table.item(r, 1).setText(f"{est.bits_per_weight:.2f}")
            self.table.item(r, 2).setText(human_bytes(est.file_bytes))
            self.table.item(r, 3).setText(human_bytes(est.run.total_bytes))
            item = self.table.item(r, 4)
            verdict = est.fit.verdict if est.fit else ""
            item.setText(FIT_TEXT.get(verdict, "—"))
            if verdict in colours:
                item.setForeground(colours[verdict])
            item.setToolTip("; ".join(est.fit.problems) if est.fit else "")
        if self.plan is not None and self.machine is not None:
            self.mix.set_fitting_budget(services.mix_fitting_budget(
                self.plan, self.machine, ctx=self.context(), kv_type=self.kv.currentText(),
                gpu_layers=self.gpu_layers.value()))
        self._summary()

    def _summary(self) -> None:
        if self.model is None or self.plan is None or self.plan_error:
            self.estimate_label.setText("Choose a model first." if self.model is None else self.plan_error
                                        or "Reading the model's tensors to estimate sizes…")
            return
        t = self.selected_type()
        if t == AWQ_TYPE:
            c = services.awq_cost(self.plan)
            self.estimate_label.setText(
                f"<b>AWQ 4-bit</b>: checkpoint about {human_bytes(c.checkpoint_bytes)}, calibration needs "
                f"about {human_bytes(c.calibration_peak_ram_bytes)} of RAM")
            return
        est = self._estimate(t) if t else None
        if not isinstance(est, Estimate):
            self.estimate_label.setText(est or "")
            return
        run = est.run
        parts = [
            f"<b>{t}</b>: file {human_bytes(est.file_bytes)} ({est.bits_per_weight:.2f} bits/weight)",
            f"to run at {self.context():,} tokens: {human_bytes(run.total_bytes)} "
            f"(KV cache {human_bytes(run.kv_cache_bytes)}"
            + (f", {human_bytes(run.vram_bytes)} on the GPU" if run.vram_bytes else "") + ")",
        ]
        if est.fit is not None:
            parts.append(f"this machine: <b>{FIT_TEXT[est.fit.verdict]}</b>")
            if est.fit.suggestion_text:
                parts.append(f"suggestion: {est.fit.suggestion_text}")
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
        if self.uses_mix():  # measured on calibration text: the given one, else Nibble's own
            args[1:3] = self.mix.args()
            return engine_argv("quantize", *args, *(["--calibration", path] if path and mode == "calibration" else []))
        if t == AWQ_TYPE:  # AWQ always calibrates: on the given text, else on Nibble's own
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
