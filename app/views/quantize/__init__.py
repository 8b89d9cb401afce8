"""The Quantize wizard: model → format and type (with a live memory estimate) → run → done.

One module a page: model_page, format_page, run_page, done_page; this one walks between them.
"""

from __future__ import annotations

import html
import pathlib
import time
from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QStackedWidget, QVBoxLayout

from app.jobs import user_command
from app.services import AWQ, GGUF, QuantizeOutcome, human_bytes
from app.state import AppState, ModelEntry, kind_of
from app.views import View
from app.views.quantize.done_page import DonePage
from app.views.quantize.format_page import AWQ_TYPE, FormatPage
from app.views.quantize.model_page import ModelPage
from app.views.quantize.run_page import RunPage

STEPS = ("Model", "Format and type", "Run", "Done")


class QuantizeWizard(View):
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
        # a queue's outputs, every one, above what the done page says of the first
        self.outputs_label = QLabel()
        self.outputs_label.setWordWrap(True)
        self.outputs_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.outputs_label.hide()
        self.done_page.layout().insertWidget(1, self.outputs_label)
        self.confirm: QMessageBox | None = None  # the "replace?" question while it is asked
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
        self.format_page.changed.connect(self._update_nav)
        self.original: ModelEntry | None = None
        self.types: list[str] = []  # what the last run was asked to make
        self._imatrix_marks: list[tuple[float, int]] = []  # (time, windows done) of the run's importance matrix
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
        blocked = i == 1 and self.format_page.blocker() is not None
        self.next_btn.setEnabled((i != 0 or self.original is not None) and not blocked)
        self.next_btn.setToolTip(self.format_page.blocker() or "" if i == 1 else "")

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
        page = self.format_page
        argv = page.command()
        if argv is None:
            return False
        existing = page.check_outputs()
        if existing is None or (existing and not self.ask_replace(existing)):
            return False
        page.save_choices()
        self.types = ["mix"] if page.uses_mix() else page.selected_types()
        what = f"the best mix for {human_bytes(page.mix.target_bytes())}" if page.uses_mix() else ", ".join(self.types)
        self._go(2)
        self.run_page.start(argv, f"{pathlib.Path(self.original.path).name} to {what}",
                            user_command(argv))
        job = self.run_page.job
        job.ended.connect(self._update_nav)
        self._imatrix_marks = []
        job.progress.connect(lambda d, _t, _m, _e: job.stage == "imatrix" and self._imatrix_marks.append(
            (time.monotonic(), d)))
        job.ended.connect(self._measured_imatrix)
        self._update_nav()
        return True

    def _measured_imatrix(self) -> None:
        """The importance matrix's own pace (first to last window seen) predicts the next one's time."""
        marks = self._imatrix_marks
        if len(marks) >= 2 and marks[-1][1] > marks[0][1]:
            self.format_page.options.remember_rate(marks[-1][1] - marks[0][1], marks[-1][0] - marks[0][0])

    def ask_replace(self, paths: list[str]) -> bool:
        """Ask before an existing output is replaced; True: replace."""
        names = "\n".join(paths)
        box = QMessageBox(QMessageBox.Icon.Question, "Replace existing output?",
                          f"{'This file exists' if len(paths) == 1 else 'These files exist'} and will be replaced:"
                          f"\n\n{names}", parent=self)
        replace_btn = box.addButton("Replace", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        self.confirm = box
        try:
            box.exec()
        finally:
            self.confirm = None
        if box.clickedButton() is not replace_btn:
            self.format_page.banner.show_message("Nothing was started: choose another name under Save to, or "
                                                 "Quantize and answer Replace.", "info")
            return False
        return True

    def _finished(self, result: QuantizeOutcome) -> None:
        event = (self.run_page.job.result if self.run_page.job else None) or {}
        made = event.get("outputs") or [{"output": result.output or self.format_page.output.text(),
                                         "type": self.types[0] if self.types else "", "file_bytes": result.file_bytes}]
        entries = []
        for o in made:
            t = str(o.get("type") or "")
            kind = AWQ if self.types == [AWQ_TYPE] else GGUF
            entries.append(ModelEntry(str(o["output"]), kind, origin=self.original.path,
                                      qtype=AWQ_TYPE if kind == AWQ else t))
        for e in reversed(entries):
            self.state.add_model(e)
        if len(made) > 1:
            self.outputs_label.setText(f"<b>{len(made)} outputs</b><br>" + "<br>".join(
                html.escape(f"{o['type']}: {o['output']} ({human_bytes(o.get('file_bytes') or 0)})") for o in made))
            self.outputs_label.show()
        else:
            self.outputs_label.hide()
        first = replace(result, output=entries[0].path, type=entries[0].qtype, file_bytes=made[0].get("file_bytes"))
        self.done_page.show_result(self.original, entries[0], first)
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
