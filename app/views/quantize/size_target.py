"""The wizard's "best mix for a size": a size (typed, a uniform type's, or what fits this machine), and
before running, the mix's exact file and predicted quality beside the uniform types near it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDoubleSpinBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from app import services
from app.jobs import run_in_thread
from app.services import human_bytes

MB = 10**6  # the size box counts in MB (10^6 bytes), as file sizes on the Hub are written


_kld = services.format_kld


class SizeTargetPanel(QGroupBox):
    """Checkable: when on, the run writes the mix of least predicted KL divergence that fits the size."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__("Best mix for a size", parent)
        self.setToolTip("Each tensor gets the type that costs least quality for the size")
        self.setCheckable(True)
        self.setChecked(False)
        self.model_path: str | None = None
        self.calibration: str | None = None
        self.plan = None
        self.preview: services.MixPreview | None = None
        self._job = None
        self._ref: tuple[str, int] | None = None  # the selected uniform type and its file size
        self._fit: int | None = None
        self._exact: int | None = None
        self._fit_key = None  # the byte count behind the box when a type's or the machine's size set it
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("At most:"))
        self.size = QDoubleSpinBox(suffix=" MB", decimals=3)
        self.size.setRange(0.01, 10**7)
        self.size.setKeyboardTracking(False)
        row.addWidget(self.size)
        self.as_type = QPushButton("Size of the selected type")
        self.fit = QPushButton("Fit this machine")
        self.predict = QPushButton("Predict quality")
        row.addWidget(self.as_type)
        row.addStretch(1)
        lay.addLayout(row)
        row2 = QHBoxLayout()
        row2.addWidget(self.fit)
        row2.addWidget(self.predict)
        row2.addStretch(1)
        lay.addLayout(row2)
        self.result = QLabel("Set a size, then Predict quality: Nibble measures the model once (then cached) "
                             "and shows the exact file and its predicted quality before anything is written.")
        self.result.setWordWrap(True)
        lay.addWidget(self.result)
        self.size.valueChanged.connect(self._size_changed)
        self.as_type.clicked.connect(self.use_reference_size)
        self.fit.clicked.connect(self.use_fitting_size)
        self.predict.clicked.connect(self.start_preview)
        self.toggled.connect(lambda _on: self.changed.emit())
        self._buttons()

    # -- inputs from the page ----------------------------------------------------------------------

    def set_model(self, path: str | None, plan, calibration: str | None = None) -> None:
        """A new model (or its plan arriving): range the size box to what a mix can be; forget the preview."""
        same = path == self.model_path and calibration == self.calibration
        if same and plan is self.plan:
            return  # nothing new (the page calls this on every change)
        self.model_path, self.plan, self.calibration = path, plan, calibration
        if not same:
            self._forget()
        if plan is not None:
            lo, hi = services.mix_size_range(plan)
            self.size.blockSignals(True)
            self.size.setRange(lo / MB, hi / MB)
            if not same or not self.size.value():
                self._set_bytes(self._ref[1] if self._ref else (lo + hi) // 2)
            self.size.blockSignals(False)
        self._buttons()

    def set_reference(self, qtype: str | None, file_bytes: int | None) -> None:
        """The uniform type selected in the table, whose size "Size of the selected type" takes."""
        self._ref = (qtype, int(file_bytes)) if qtype and file_bytes else None
        self.as_type.setText(f"Size of {qtype}" if self._ref else "Size of the selected type")
        self._buttons()

    def set_fitting_budget(self, budget: int | None) -> None:
        """The largest mix that runs on this machine at the page's context (None: none does)."""
        self._fit = budget
        self._buttons()

    def follow(self, page) -> None:
        """Take the format page's model, plan, calibration text, selected type and machine; arithmetic only,
        so the page calls it on every change."""
        text = page.options.cal_path.text().strip() if page.imatrix_mode.currentData() == "calibration" else ""
        self.set_model(page.model.path if page.model else None, page.plan, text or None)
        t = page.selected_type()
        est = page._estimate(t) if t and not page.is_awq() else None
        self.set_reference(t, est.file_bytes if isinstance(est, services.Estimate) else None)
        if page.plan is not None and page.machine is not None:
            key = (id(page.plan), page.machine, page.context(), page.kv.currentText(), page.gpu_layers.value())
            if key != self._fit_key:  # tens of milliseconds on a large model: only when an input changed
                self._fit_key = key
                self.set_fitting_budget(services.mix_fitting_budget(
                    page.plan, page.machine, ctx=key[2], kv_type=key[3], gpu_layers=key[4]))
        self.setEnabled(not page.is_awq())

    # -- what the run takes --------------------------------------------------------------------------

    def target_bytes(self) -> int:
        if self._exact is not None and round(self._exact / MB, self.size.decimals()) == round(self.size.value(), self.size.decimals()):
            return self._exact
        return int(round(self.size.value() * MB))

    def _set_bytes(self, n: int) -> None:
        self._exact = n
        self.size.setValue(n / MB)

    def args(self) -> list[str]:
        """The quantize options for the mix (used when the panel is checked)."""
        return ["--target-size", str(self.target_bytes())]

    # -- actions -------------------------------------------------------------------------------------

    def use_reference_size(self) -> None:
        if self._ref:
            self._set_bytes(self._ref[1])

    def use_fitting_size(self) -> None:
        if self._fit is None:
            self.result.setText("No mix of this model runs on this machine at this context; "
                                "lower the context or add GPU layers.")
            return
        self._set_bytes(self._fit)
        self.result.setText(f"The largest mix that runs here with room to spare: {human_bytes(self._fit)}. "
                            "Predict quality to see what it keeps.")

    def start_preview(self) -> None:
        if not self.model_path or self.plan is None:
            return
        self._cancel()
        budget, path = self.target_bytes(), self.model_path
        self.result.setText("Measuring how much each tensor costs at each type (once per model; then cached)…")
        self._job = run_in_thread(
            services.preview_mix, path, budget, pass_reporter=True, calibration=self.calibration,
            on_result=lambda p: self._previewed(path, budget, p), on_error=self._failed,
            on_progress=lambda d, t, m: self._progress(path, d, t, m), on_end=self._buttons)
        self._buttons()

    # -- results -------------------------------------------------------------------------------------

    def _progress(self, path: str, done: int, total: int, message: str) -> None:
        if path == self.model_path and message:
            self.result.setText(f"Measuring (once per model): {message}")

    def _previewed(self, path: str, budget: int, p: services.MixPreview) -> None:
        if path != self.model_path or budget != self.target_bytes():
            return  # the choice moved on while this was measured
        self.preview = p
        near = ", ".join(f"{t} {human_bytes(b)}: {_kld(k)}" for t, b, k in p.uniform)
        counts = ", ".join(f"{t} ×{n}" for t, n in sorted(p.type_counts.items()))
        self.result.setText(
            f"<b>Mix</b>: file {human_bytes(p.file_bytes)} ({p.file_bytes:,} bytes, exact), "
            f"{p.bits_per_weight:.2f} bits/weight, predicted KL divergence <b>{_kld(p.predicted_kld)}</b>"
            + (f"<br>uniform types near this size, same prediction: {near}" if near else "")
            + f"<br>tensors: {counts}")

    def _failed(self, message: str) -> None:
        self.result.setText(message)

    def _size_changed(self) -> None:
        if self.preview is not None:
            self.preview = None
            self.result.setText("Size changed: Predict quality again to see the mix for it.")
        self.changed.emit()

    def _forget(self) -> None:
        self._cancel()
        self.preview = None
        self.result.setText("Set a size, then Predict quality: Nibble measures the model once (then cached) "
                            "and shows the exact file and its predicted quality before anything is written.")

    def _cancel(self) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel()
        self._job = None

    def _buttons(self) -> None:
        ready = self.model_path is not None and self.plan is not None
        busy = self._job is not None and not self._job.done
        self.predict.setEnabled(ready and not busy)
        self.as_type.setEnabled(ready and self._ref is not None)
        self.fit.setEnabled(ready)
        self.size.setEnabled(ready)
