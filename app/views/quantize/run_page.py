"""Step 3 of the Quantize wizard: the engine's quantize command in a child process, its progress and log."""

from __future__ import annotations

import pathlib
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.jobs import ProcessJob, format_seconds
from app.services import QuantizeOutcome
from app.views.quantize.options import FIELD_LABELS
from app.widgets import Banner

STAGE_NAMES = {"convert": "Converting", "imatrix": "Importance matrix", "quantize": "Quantizing",
               "calibrate": "Calibrating", "awq": "AWQ"}


class RunPage(QWidget):
    finished = Signal(object)  # QuantizeOutcome
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.job: ProcessJob | None = None
        self.outcome = ""  # "", "running", "done", "failed" or "cancelled"
        self.started = 0.0
        self.subject = ""  # what is being made, e.g. "demo to Q4_K_M"
        lay = QVBoxLayout(self)
        self.title = QLabel()
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        crow = QHBoxLayout()
        crow.addWidget(QLabel("Command:"))
        self.command = QLineEdit(readOnly=True)
        self.command.setToolTip("The same job from a terminal")
        self.copy_btn = QPushButton("Copy")
        crow.addWidget(self.command, 1)
        crow.addWidget(self.copy_btn)
        lay.addLayout(crow)
        self.copy_btn.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command.text()))
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
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)  # long lines scroll sideways
        self.log.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
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

    def start(self, argv: list[str], subject: str, command: str) -> ProcessJob:
        """Run the engine command ``argv``; ``subject`` says what it makes, ``command`` is the ``nibble``
        command a user can copy that does the same."""
        self.subject = subject
        self.title.setText(f"Quantizing {subject}…")
        self.command.setText(command)
        self.command.setCursorPosition(0)
        self.banner.clear()
        self.log.clear()
        self.bar.reset()  # nothing left of the last job's count
        self.bar.setFormat("")
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
            queue = "--type" in argv and "," in argv[argv.index("--type") + 1]  # a queue writes into --out
            folder = out if queue else out.parent
            self.job.leftovers = lambda pid: list(folder.glob(f".*.{pid}.tmp"))
        self.job.progress.connect(self._progress)
        self.job.item.connect(self._item)
        self.job.log.connect(self.log.appendPlainText)
        self.job.succeeded.connect(self._succeeded)
        self.job.failed.connect(self._failed)
        self.job.cancelled.connect(self._cancelled)
        self.job.shown_command = command
        self.job.start()
        return self.job

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def cancel(self) -> None:
        if self.job is not None:
            self.cancel_btn.setEnabled(False)
            self.title.setText(f"Cancelling {self.subject}…")
            self.status.setText("Cancelling…")
            self.eta.clear()
            self.job.cancel()

    def _item(self, n: int, of: int, type_name: str) -> None:
        """A queue moved on to its n-th type."""
        if self.outcome == "running" and self.cancel_btn.isEnabled():
            self.title.setText(f"Quantizing {self.subject}… {n} of {of}: {type_name}")

    def _progress(self, done: int, total: int, message: str, eta: float) -> None:
        if not self.cancel_btn.isEnabled():  # cancelling: the last figures would only freeze there
            return
        if total > 0:
            # a progress bar repaints itself at once on each new value (1-15 ms here, for every line of the job's
            # progress); with its updates held it is painted once, with the rest of the window
            self.bar.setUpdatesEnabled(False)
            self.bar.setRange(0, total)
            self.bar.setValue(done)
            self.bar.setFormat(f"{done} / {total}")
            self.bar.setUpdatesEnabled(True)
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
        self.title.setText(f"{self.subject}: {outcome}.")
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
        item = self.job.current_item if self.job else None
        done = item[0] - 1 if item else 0
        kept = f" {done} output{' finished before the cancel and stays' if done == 1 else 's finished before the cancel and stay'}." \
            if done else ""
        self._stopped("cancelled", "Cancelled; nothing half-written was kept." + kept)
        self.cancelled.emit()
