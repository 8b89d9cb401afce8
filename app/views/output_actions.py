"""What can be done with a quantized output, from the Library and from the Quantize wizard's last page:
publish it to the Hub, hand it to Ollama or LM Studio, show it in the file manager, copy its path.

Each action says what it did (or why it could not) in one line on the banner it is given; the slow ones
(uploading, ``ollama create``) run in a worker thread."""

from __future__ import annotations

import pathlib
import re

from PySide6.QtCore import QObject, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread
from app.widgets import Banner

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def show_in_file_manager(path: str, banner: Banner) -> bool:
    """Open the folder holding ``path``; where no file manager can be started, say so and put the path on the
    clipboard instead."""
    p = pathlib.Path(path)
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(p.parent if p.is_file() else p))):
        return True
    QGuiApplication.clipboard().setText(str(p))
    banner.show_message(f"No file manager could be opened here; the path is on the clipboard: {p}", "warn")
    return False


def copy_path(path: str, banner: Banner) -> None:
    QGuiApplication.clipboard().setText(str(path))
    banner.show_message(f"Copied {path}", "info")


class PublishDialog(QDialog):
    """Repository, private flag and split size; the upload runs in a worker thread with the saved token."""

    published = Signal(object)  # engine.hub.upload.Published
    failed = Signal(str)

    def __init__(self, path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.job = None
        self.result = None
        self.setWindowTitle(f"Publish {pathlib.Path(path).name}")
        self.setMinimumWidth(460)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.repo = QLineEdit()
        self.repo.setPlaceholderText("USER/NAME")
        self.private = QCheckBox("Private repository")
        self.split = QLineEdit("50GB")
        self.split.setToolTip("GGUF files above this size are split in llama.cpp's split format (the Hub advises 50GB)")
        form.addRow("Repository:", self.repo)
        form.addRow("", self.private)
        form.addRow("Split files above:", self.split)
        lay.addLayout(form)
        note = QLabel("Nibble uploads with the Hugging Face token you saved (nibble login); it is never shown. "
                      "The model card carries the figures Nibble measured. Local files are not changed.")
        note.setWordWrap(True)
        lay.addWidget(note)
        self.progress = QProgressBar()
        self.progress.hide()
        lay.addWidget(self.progress)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.publish_btn = self.buttons.addButton("Publish", QDialogButtonBox.ButtonRole.ActionRole)
        lay.addWidget(self.buttons)
        self.publish_btn.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)

    def start(self) -> None:
        if self.job is not None:
            return
        repo = self.repo.text().strip()
        if not REPO_ID.fullmatch(repo):
            self.banner.show_message("Repository: write it as USER/NAME (or ORGANISATION/NAME).")
            return
        try:
            split = services.parse_split_size(self.split.text())
        except services.NibbleError as exc:
            self.banner.show_message(f"Split size: {str(exc).split(': ', 1)[-1]}")
            return
        self.banner.show_message(f"Publishing to {repo}…", "info")
        self.publish_btn.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.job = run_in_thread(services.publish, self.path, repo, private=self.private.isChecked(),
                                 split_bytes=split, pass_reporter=True, on_progress=self._progress,
                                 on_result=self._done, on_error=self._error, on_end=self._ended)

    def _progress(self, done: int, total: int, message: str) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _done(self, result) -> None:
        self.result = result
        what = "Created" if result.created else "Updated"
        self.banner.show_message(f"{what} {result.url} ({', '.join(result.files)})", "info")
        self.published.emit(result)

    def _error(self, message: str) -> None:
        self.banner.show_message(message)
        self.failed.emit(message)

    def _ended(self) -> None:
        self.job = None
        self.progress.hide()
        self.publish_btn.setEnabled(True)

    def reject(self) -> None:
        if self.job is not None:
            self.job.cancel()
        super().reject()


class OutputActions(QObject):
    """The hand-off actions for one widget, reporting on its banner. ``said`` carries each one-line report."""

    said = Signal(str)

    def __init__(self, parent: QWidget, banner: Banner):
        super().__init__(parent)
        self.widget, self.banner = parent, banner
        self.jobs: list = []
        self.dialog: PublishDialog | None = None

    def publish(self, path: str) -> PublishDialog:
        self.dialog = PublishDialog(path, self.widget)
        self.dialog.published.connect(lambda r: self._say(f"Published {pathlib.Path(path).name} to {r.url}"))
        self.dialog.show()
        return self.dialog

    def use_in_ollama(self, path: str) -> None:
        self._handoff(services.use_in_ollama, path, "Ollama")

    def use_in_lmstudio(self, path: str) -> None:
        self._handoff(services.use_in_lmstudio, path, "LM Studio")

    def _handoff(self, fn, path: str, name: str) -> None:
        self.banner.show_message(f"Handing {pathlib.Path(path).name} to {name}…", "info")
        self.jobs.append(run_in_thread(fn, path, on_result=lambda h: self._say(h.message[:1].upper() + h.message[1:]),
                                       on_error=lambda m: self._say(m, "error")))

    def _say(self, message: str, kind: str = "info") -> None:
        self.banner.show_message(message, kind)
        self.said.emit(message)

    def busy(self) -> bool:
        return any(not j.done for j in self.jobs) or (self.dialog is not None and self.dialog.job is not None)
