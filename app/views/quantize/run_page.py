"""Step 3 of the Quantize wizard: the engine's quantize command in a child process, its progress and log."""

from __future__ import annotations

import pathlib
import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.jobs import ProcessJob, format_seconds
from app.services import QuantizeOutcome
from app.widgets import Banner

STAGE_NAMES = {"convert": "Converting", "imatrix": "Importance matrix", "quantize": "Quantizing",
               "calibrate": "Calibrating", "awq": "AWQ"}
# The settings an engine error can name (engine.core.errors.SETTINGS), as the format page labels them.
FIELD_LABELS = {"quant type": "Type", "output path": "Save to", "calibration text": "Importance matrix file",
                "importance matrix": "Importance matrix", "context length": "Context",
                "KV cache type": "KV cache type", "GPU layers": "GPU layers", "device": "Device"}


class RunPage(QWidget):
    finished = Signal(object)  # QuantizeOutcome
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

    def _succeeded(self, event: dict) -> None:
        self.outcome = "done"
        self.cancel_btn.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.finished.emit(QuantizeOutcome.from_event(event, elapsed=time.monotonic() - self.started))

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

    def stopped_without_result(self) -> bool:
        """The last job failed or was cancelled (so the same settings can be run again)."""
        return self.outcome in ("failed", "cancelled")

    def _failed(self, message: str) -> None:
        self._stopped("failed", "Failed; nothing was written.")
        field = FIELD_LABELS.get(self.job.error_setting or "") if self.job else None
        self.banner.show_message(f"Quantization failed{f' ({field})' if field else ''}: {message}")
        self.failed.emit(message)

    def _cancelled(self) -> None:
        self._stopped("cancelled", "Cancelled; nothing was written.")
        self.cancelled.emit()
