"""The Quantize wizard: model → format and type (with a live memory estimate) → run → done.

One module a page: model_page, format_page, run_page, done_page; this one walks between them.
"""

from __future__ import annotations

import pathlib

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout

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
        if self.format_page.uses_mix():
            t = f"the best mix for {human_bytes(self.format_page.mix.target_bytes())}"
        self._go(2)
        self.run_page.start(argv, f"Quantizing {pathlib.Path(self.original.path).name} to {t}…")
        self.run_page.job.ended.connect(self._update_nav)
        self._update_nav()
        return True

    def _finished(self, result: QuantizeOutcome) -> None:
        out = result.output or self.format_page.output.text()
        t = "mix" if self.format_page.uses_mix() else self.format_page.selected_type() or ""
        entry = ModelEntry(str(out), AWQ if t == AWQ_TYPE else GGUF, origin=self.original.path, qtype=t)
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
