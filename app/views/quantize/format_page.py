"""Step 2 of the Quantize wizard: GGUF types (a table with a live estimate; several make a queue) or AWQ,
with the options beside it (app/views/quantize/options.py)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QRadioButton,
    QScrollArea,
    QTableWidgetItem,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from app import services, sysinfo
from app.jobs import run_in_thread
from app.services import Estimate, human_bytes
from app.settings import QUANTIZE_CTX, QUANTIZE_FORMAT, QUANTIZE_KV, QUANTIZE_TYPE
from app.state import AppState, ModelEntry
from app.style import fit_colors
from app.views.quantize.command import blocker, build_command, check_outputs
from app.views.quantize.model_page import setup_table
from app.views.quantize.options import AWQ_TYPE, FIELD_LABELS, KV_TYPES, OptionsPanel  # noqa: F401
from app.views.quantize.size_target import SizeTargetPanel
from app.widgets import Banner, one_change

FIT_TEXT = {"fits": "fits", "tight": "tight", "no": "does not fit"}  # engine.estimate.Fit.verdict in words
COLUMNS = ["Type", "Bits/weight", "File size", "Memory to run", "Fits here", "Notes"]


class FormatPage(QWidget):
    """GGUF types in a table with a live estimate, or AWQ; the options panel beside it."""

    changed = Signal()

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model: ModelEntry | None = None
        self.plan = None
        self.plan_error = ""
        self.types: list[services.QuantType] = []
        self.sizable = services.sizable_types()
        self.unavailable: dict[str, str] = {}  # type -> why the engine cannot make it for this model
        self.devices: list[sysinfo.Device] = []
        self._jobs: list = []
        self.machine = None
        self._probe = None

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
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        setup_table(self.table)
        # Ctrl- or Shift-click several types: they are quantized one after another from one conversion.
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.table.horizontalHeader()
        for c in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        header.setStretchLastSection(True)
        # every column but the notes (elided; whole in the tooltip) stays whole down to 900 pixels wide
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        left.addWidget(self.table, 1)
        self.type_status = QLabel()
        self.type_status.setWordWrap(True)
        left.addWidget(self.type_status)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        left.addWidget(self.estimate_label)
        self.mix = SizeTargetPanel()  # or the best mix of types for a size
        left.addWidget(self.mix)

        self.options = OptionsPanel(state)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.options)
        scroll.setMinimumWidth(270)
        scroll.setMaximumWidth(420)
        body.addWidget(scroll, 2)
        self.banner = Banner()
        lay.addWidget(self.banner)

        o = self.options  # the fields tests and the wizard reach by name
        self.ctx, self.kv, self.device, self.gpu_layers = o.ctx, o.kv, o.device, o.gpu_layers
        self.imatrix_mode, self.imatrix_path, self.output, self.threads = o.imatrix_mode, o.imatrix_path, o.output, o.threads
        for w in (self.ctx, self.kv, self.device):
            w.currentIndexChanged.connect(self.update_estimates)
        self.device.currentIndexChanged.connect(self._device_changed)
        self.gpu_layers.valueChanged.connect(self.update_estimates)
        self.table.itemSelectionChanged.connect(self._type_changed)
        self.gguf_radio.toggled.connect(self._format_changed)
        o.changed.connect(self._options_changed)
        self.mix.changed.connect(self._type_changed)
        self._restore_choices()
        self._load_types()

    def probe_machine(self) -> None:
        """Devices and free RAM, VRAM and disk (at the output folder), then the matrix rate for the importance
        matrix's expected time, read in one child process."""
        folder = str(self.options.folder())
        self._probe = sysinfo.probe_in_child(folder, self._probed, self, on_flops=self.options.set_flops)

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
            if t.name not in self.sizable:
                notes.append("size not known before it is made (Nibble's estimate does not describe this type)")
            note = QTableWidgetItem("; ".join(notes))
            note.setToolTip(note.text())
            self.table.setItem(r, 5, note)
            for c in (1, 2, 3, 4):
                self.table.setItem(r, c, QTableWidgetItem("…"))
        self.select_type(self.state.get(QUANTIZE_TYPE)) or (self.table.rowCount() and self.table.selectRow(0))

    def _set_devices(self, devices) -> None:
        self.devices = list(devices)
        self.device.blockSignals(True)
        self.device.clear()
        for d in self.devices:
            self.device.addItem(d.label + ("" if d.usable else f" — {d.note}"), d.key)
            if not d.usable:
                self.device.model().item(self.device.count() - 1).setEnabled(False)
        self.device.blockSignals(False)
        self.update_estimates()

    def set_model(self, entry: ModelEntry) -> None:
        if self.model and self.model.path == entry.path and (self.plan is not None or self.plan_error):
            return
        self.model = entry
        self.plan = None
        self.plan_error = ""
        self.unavailable = {}
        self._mark_unavailable()
        self._retarget()
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
            want = self.context()  # the user's last choice; at most what the model was trained on
            self.options.set_contexts(services.context_choices(plan), min(want, plan.n_ctx_train or want))
            self.unavailable = {}
            self.update_estimates()  # notes the types the engine cannot make for this model
            self._mark_unavailable()
            self._retarget()
            self._summary()

    def _plan_failed(self, path: str, message: str) -> None:
        if self.model and self.model.path == path:
            self.plan_error = message
            self.update_estimates()

    # -- choices -----------------------------------------------------------------------------------

    def is_awq(self) -> bool:
        return self.awq_radio.isChecked()

    def uses_mix(self) -> bool:
        """The run writes the best mix for the mix panel's size instead of the selected types."""
        return not self.is_awq() and self.mix.isChecked()

    def selected_types(self) -> list[str]:
        """The chosen types in table order: one, several (a queue), or ["AWQ"]."""
        if self.is_awq():
            return [AWQ_TYPE]
        rows = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]

    def selected_type(self) -> str | None:
        """The type the estimate summary speaks of: the current row (of a queue), or AWQ."""
        types = self.selected_types()
        if not types:
            return None
        cur = self.table.currentRow()
        name = self.table.item(cur, 0).text() if cur >= 0 and self.table.item(cur, 0) else None
        return name if name in types else types[0]

    def select_type(self, name: str) -> bool:
        return self.select_types([name])

    def select_types(self, names: list[str]) -> bool:
        """Select ``names`` (AWQ or GGUF types that can be made); False if any is not offered."""
        if [str(n).upper() for n in names] == [AWQ_TYPE]:
            self.awq_radio.setChecked(True)
            return True
        rows = [r for r in range(self.table.rowCount()) if self.table.item(r, 0).text() in names]
        if len(rows) != len(names) or any(self.table.item(r, 0).text() in self.unavailable for r in rows):
            return False
        self.gguf_radio.setChecked(True)
        self.table.blockSignals(True)
        self.table.clearSelection()
        for r in rows:
            self.table.selectRow(r) if len(rows) == 1 else self.table.selectionModel().select(
                self.table.model().index(r, 0),
                self.table.selectionModel().SelectionFlag.Select | self.table.selectionModel().SelectionFlag.Rows)
        self.table.setCurrentCell(rows[0], 0, self.table.selectionModel().SelectionFlag.NoUpdate)
        self.table.blockSignals(False)
        self._type_changed()
        return True

    def context(self) -> int:
        return self.options.context()

    def _mark_unavailable(self) -> None:
        with one_change(self.table):
            self._mark_rows()
        if self.unavailable:
            self.table.blockSignals(True)
            for r in range(self.table.rowCount()):
                if self.table.item(r, 0).text() in self.unavailable:
                    for c in range(self.table.columnCount()):
                        self.table.item(r, c).setSelected(False)
            self.table.blockSignals(False)

    def _mark_rows(self) -> None:
        for r in range(self.table.rowCount()):
            name = self.table.item(r, 0).text()
            reason = self.unavailable.get(name)
            on = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            tip = f"{name} cannot be made here: {reason}" if reason else ""
            for c in range(self.table.columnCount()):
                it = self.table.item(r, c)
                flags = it.flags()
                wanted = flags & ~on if reason else flags | on
                if wanted != flags:  # each change makes the table re-measure its columns: only real ones
                    it.setFlags(wanted)
                if it.toolTip() != tip:
                    it.setToolTip(tip)

    def _device_changed(self) -> None:
        gpu = self.device.currentData() not in (None, "cpu")
        self.gpu_layers.setEnabled(gpu)
        if gpu and self.gpu_layers.value() == 0:
            self.gpu_layers.setValue(999)
        elif not gpu:
            self.gpu_layers.setValue(0)

    def _retarget(self) -> None:
        if self.model is not None:
            n = 0
            est = self._estimate("F16") if self.plan is not None else None
            if isinstance(est, Estimate):
                n = est.n_params
            mix = [f"mix-{self.mix.target_bytes() / 1e6:.0f}MB"] if self.uses_mix() else None
            self.options.set_target(self.model.path, mix or self.selected_types(), n)

    def _type_changed(self) -> None:
        types = self.selected_types()
        if types and not self.is_awq():
            self.state.put(QUANTIZE_TYPE, types[0])
            needs = any(x.name in types and x.needs_imatrix for x in self.types)
            if needs and self.imatrix_mode.currentData() == "none":
                self.imatrix_mode.setCurrentIndex(1)
        self._retarget()
        self.update_estimates()
        self.changed.emit()

    def _format_changed(self) -> None:
        self.table.setEnabled(not self.is_awq())
        self._retarget()
        self.update_estimates()
        self.changed.emit()

    def _options_changed(self) -> None:
        self._summary()
        self.changed.emit()

    def _restore_choices(self) -> None:
        kv = self.state.get(QUANTIZE_KV)
        if kv in KV_TYPES:
            self.kv.setCurrentIndex(KV_TYPES.index(kv))
        ctx = self.ctx.findData(int(self.state.get(QUANTIZE_CTX)))
        if ctx >= 0:
            self.ctx.setCurrentIndex(ctx)
        if self.state.get(QUANTIZE_FORMAT) == services.AWQ:
            self.awq_radio.setChecked(True)

    def save_choices(self) -> None:
        self.state.put(QUANTIZE_CTX, self.context())
        self.state.put(QUANTIZE_KV, self.kv.currentText())
        self.state.put(QUANTIZE_FORMAT, services.AWQ if self.is_awq() else services.GGUF)
        self.options.save_choices()

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
        with one_change(self.table):
            self._fill_estimates(colours, waiting)
        self._summary()

    def _fill_estimates(self, colours, waiting: bool) -> None:
        for r in range(self.table.rowCount()):
            name = self.table.item(r, 0).text()
            est = self._estimate(name)
            if isinstance(est, str) and name in self.sizable:
                self.unavailable.setdefault(name, est)
            if not isinstance(est, Estimate):
                for c in (1, 2, 3, 4):
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
            if self.table.item(r, 0).text() not in self.unavailable:
                item.setToolTip("; ".join(est.fit.problems) if est.fit else "")

    def memory_parts(self, est: Estimate) -> list[tuple[str, int]]:
        """The parts of "memory to run" the summary names; they add up to the total."""
        run = est.run
        return [("weights", run.weights_bytes), ("KV cache", run.kv_cache_bytes),
                ("compute buffers", run.compute_bytes), ("runtime", run.overhead_bytes)]

    def _summary(self) -> None:
        self.mix.follow(self)
        self.type_status.setText(self._type_status())
        if self.model is None or self.plan is None or self.plan_error:
            self.estimate_label.setText("Choose a model first." if self.model is None else self.plan_error
                                        or "Reading the model's tensors to estimate sizes…")
            return
        t = self.selected_type()
        if t == AWQ_TYPE:
            c = services.awq_cost(self.plan, group_size=int(self.options.group_size.currentData()))
            self.estimate_label.setText(
                f"<b>AWQ 4-bit</b>: checkpoint about {human_bytes(c.checkpoint_bytes)}, calibration needs "
                f"about {human_bytes(c.calibration_peak_ram_bytes)} of RAM")
            return
        est = self._estimate(t) if t else None
        if not isinstance(est, Estimate):
            self.estimate_label.setText(est or "")
            return
        run = est.run
        parts = " + ".join(f"{name} {human_bytes(b)}" for name, b in self.memory_parts(est))
        lines = [
            f"<b>{t}</b>: file {human_bytes(est.file_bytes)} ({est.bits_per_weight:.2f} bits/weight)",
            f"to run at {self.context():,} tokens: <b>{human_bytes(run.total_bytes)}</b> = {parts}"
            + (f" ({human_bytes(run.vram_bytes)} on the GPU)" if run.vram_bytes else ""),
        ]
        if est.fit is not None:
            fit = f"this machine: <b>{FIT_TEXT[est.fit.verdict]}</b>"
            if est.fit.suggestion_text:
                fit += f" · suggestion: {est.fit.suggestion_text}"
            lines.append(fit)
        self.estimate_label.setText("<br>".join(lines))

    def _type_status(self) -> str:
        out = []
        types = self.selected_types()
        if len(types) > 1:
            out.append(f"{len(types)} types queued ({', '.join(types)}): the model is converted once, "
                       "then each type is made in turn.")
        if (reason := self.blocker()) is not None:
            out.append(reason)
        for name, reason in self.unavailable.items():
            out.append(f"{name} cannot be made here: {reason}")
        return "\n".join(out)

    def blocker(self) -> str | None:
        """Why the chosen types cannot run with these settings, or None."""
        return blocker(self)

    # -- the command -------------------------------------------------------------------------------

    def command(self) -> list[str] | None:
        """The engine command for the current choices, or None (with a message in place) when it cannot run."""
        return build_command(self)

    def check_outputs(self) -> list[str] | None:
        """The engine's checks of the output, shown here before anything starts: None (with the message) when
        it cannot be written, else the existing outputs it would replace."""
        return check_outputs(self)
