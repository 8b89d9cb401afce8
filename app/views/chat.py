"""Chat with a model: streaming reply, Stop, Regenerate, Clear, sampling settings, tokens/s, context fill."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread
from app.services import ChatSettings, Conversation, ReplyFigures
from app.settings import CHAT_MAX_TOKENS, CHAT_SYSTEM, CHAT_TEMPERATURE, CHAT_TOP_P
from app.state import AppState, ModelEntry, kind_of
from app.views import View
from app.widgets import Banner, ModelPicker


def _escape(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")


class ChatView(View):
    reply_finished = Signal(str)  # the whole reply, after a stream ends (done or stopped)
    piece_shown = Signal(str)  # each streamed piece, once it is on screen

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.conversation = Conversation()  # the history; its runtime is the loaded model
        self.runtime_path: str | None = None
        self.reply = ""  # the answer as it streams
        self.job = None
        self.load_job = None
        self._t0 = 0.0
        self._pieces = 0
        self._base_html = ""
        self._streaming = False
        self._redraw = QTimer(self, singleShot=True, interval=33)
        self._redraw.timeout.connect(self._redraw_now)

        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        self.picker = ModelPicker(state)
        top.addWidget(self.picker, 1)
        lay.addLayout(top)
        self.banner = Banner()
        lay.addWidget(self.banner)

        split = QSplitter(Qt.Orientation.Horizontal)
        lay.addWidget(split, 1)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        ll.addWidget(self.transcript, 1)
        self.input = QPlainTextEdit(placeholderText="Type a message — Ctrl+Enter sends")
        self.input.setMaximumHeight(110)
        ll.addWidget(self.input)
        brow = QHBoxLayout()
        self.stats = QLabel()
        self.fill = QProgressBar()
        self.fill.setMaximumWidth(180)
        self.fill.setFormat("context %p%")
        self.fill.setValue(0)
        self.send_btn = QPushButton("Send")
        self.stop_btn = QPushButton("Stop")
        self.regen_btn = QPushButton("Regenerate")
        self.clear_btn = QPushButton("Clear")
        brow.addWidget(self.stats, 1)
        brow.addWidget(self.fill)
        for b in (self.clear_btn, self.regen_btn, self.stop_btn, self.send_btn):
            brow.addWidget(b)
        ll.addLayout(brow)
        split.addWidget(left)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        self.system = QPlainTextEdit(state.get(CHAT_SYSTEM))
        self.system.setMaximumHeight(90)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.05)
        self.temperature.setValue(state.get(CHAT_TEMPERATURE))
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=1.0, singleStep=0.05)
        self.top_p.setValue(state.get(CHAT_TOP_P))
        self.max_tokens = QSpinBox(minimum=1, maximum=32768)
        self.max_tokens.setValue(state.get(CHAT_MAX_TOKENS))
        form.addRow("System prompt:", self.system)
        form.addRow("Temperature:", self.temperature)
        form.addRow("Top-p:", self.top_p)
        form.addRow("Max tokens:", self.max_tokens)
        rl.addWidget(box)
        tbox = QGroupBox("Chat template")
        tl = QVBoxLayout(tbox)
        self.template = QPlainTextEdit(readOnly=True)
        self.template.setPlaceholderText("Load a model to see its chat template.")
        tl.addWidget(self.template)
        rl.addWidget(tbox, 1)
        split.addWidget(right)
        split.setSizes([800, 320])

        self.send_btn.clicked.connect(self.send)
        self.stop_btn.clicked.connect(self.stop)
        self.regen_btn.clicked.connect(self.regenerate)
        self.clear_btn.clicked.connect(self.clear)
        QShortcut(QKeySequence("Ctrl+Return"), self.input, self.send)
        QShortcut(QKeySequence("Escape"), self, self.stop)
        self.picker.changed.connect(self._model_changed)
        self._update_buttons()

    @property
    def runtime(self):
        """The loaded model, or None."""
        return self.conversation.runtime

    # -- model -------------------------------------------------------------------------------------

    def open_payload(self, payload: dict) -> None:
        path = payload.get("model")
        if path:
            self.picker.set_model(ModelEntry(path, kind_of(path)))

    def _model_changed(self, entry: ModelEntry | None) -> None:
        if entry is None or entry.path == self.runtime_path or self.is_busy():
            return
        self.unload()

    def unload(self) -> None:
        services.close_model(self.conversation.runtime)
        self.conversation.runtime = None
        self.runtime_path = None
        self.template.clear()

    def ensure_model(self, then) -> None:
        """Load the picked model in a worker if it is not loaded, then call ``then()`` on the UI thread."""
        entry = self.picker.current()
        if entry is None:
            self.banner.show_message("Pick a model first (Browse… opens a GGUF file or a model folder).")
            return
        if self.runtime is not None and self.runtime_path == entry.path:
            then()
            return
        self.unload()
        self.stats.setText(f"Loading {entry.label}…")

        def loaded(rt):
            self.conversation.runtime, self.runtime_path = rt, entry.path
            self.template.setPlainText(rt.chat_template or "(the model has no chat template; "
                                                           "a plain prompt format is used)")
            self.stats.setText("Model loaded.")
            then()

        self.load_job = run_in_thread(services.open_model, entry.path, on_result=loaded, on_error=self._error,
                                      on_end=self._load_ended)
        self._update_buttons()

    def _load_ended(self) -> None:
        self.load_job = None
        self._update_buttons()

    # -- conversation ------------------------------------------------------------------------------

    def send(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or self.is_busy():
            return
        self.banner.clear()
        self.input.clear()
        self.conversation.ask(text)
        self._render()
        self.ensure_model(self._generate)

    def regenerate(self) -> None:
        if self.is_busy():
            return
        if self.conversation.retry():
            self._render()
            self.ensure_model(self._generate)

    def clear(self) -> None:
        self.stop()
        self.conversation.reset()
        self.reply = ""
        self.fill.setValue(0)
        self.stats.clear()
        self._render()

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def settings(self) -> ChatSettings:
        return ChatSettings(system_prompt=self.system.toPlainText().strip() or None,
                            temperature=self.temperature.value(), top_p=self.top_p.value(),
                            max_tokens=self.max_tokens.value())

    def _generate(self) -> None:
        s = self.conversation.settings = self.settings()
        for setting, value in ((CHAT_SYSTEM, s.system_prompt or ""), (CHAT_TEMPERATURE, s.temperature),
                               (CHAT_TOP_P, s.top_p), (CHAT_MAX_TOKENS, s.max_tokens)):
            self.state.put(setting, value)
        self.reply = ""
        self._pieces = 0
        self._streaming = True
        self._t0 = time.monotonic()
        self.job = run_in_thread(
            services.chat_reply, self.conversation, pass_reporter=True,
            on_item=self._piece, on_result=self._done, on_cancelled=lambda: self._done(None),
            on_error=self._error, on_end=self._gen_ended,
        )
        self._render()
        self._update_buttons()

    def _piece(self, text: str) -> None:
        self.reply += text
        self._pieces += 1
        if not self._redraw.isActive():  # redraw at most ~30 times a second, however fast tokens come
            self._redraw.start()
        self.piece_shown.emit(text)

    def _redraw_now(self) -> None:
        dt = time.monotonic() - self._t0
        if dt > 0 and self._streaming:
            self.stats.setText(f"{self._pieces / dt:.1f} tokens/s")
        self._render_reply()

    def _done(self, figures: ReplyFigures | None) -> None:
        """The reply ended; ``figures`` is None when it was stopped (its text stays in the history)."""
        self._streaming = False
        self._redraw.stop()
        if figures is not None:
            if figures.tokens_per_second:
                self.stats.setText(f"{figures.completion_tokens} tokens, {figures.tokens_per_second:.1f} tokens/s")
            self.fill.setValue(int(100 * figures.context_used / figures.context_size))
            self.fill.setToolTip(f"{figures.context_used} of {figures.context_size} tokens of context used")
        else:
            self.stats.setText(self.stats.text() + " — stopped")
        self._render()
        self.reply_finished.emit(self.reply)

    def _gen_ended(self) -> None:
        self.job = None
        self._update_buttons()

    def _error(self, message: str) -> None:
        self._streaming = False
        self._render()
        self.banner.show_message(message)
        self.stats.clear()

    def _render(self) -> None:
        parts = []
        for m in self.conversation.history:
            who = "You" if m["role"] == "user" else "Model"
            parts.append(f"<p><b>{who}:</b><br>{_escape(m['content'])}</p>")
        self._base_html = "".join(parts)
        self._render_reply()

    def _render_reply(self) -> None:
        html = self._base_html
        if self._streaming:
            html += f"<p><b>Model:</b><br>{_escape(self.reply)}▍</p>"
        self.transcript.setHtml(html)
        self.transcript.moveCursor(QTextCursor.MoveOperation.End)

    def _update_buttons(self) -> None:
        busy = self.is_busy()
        self.send_btn.setEnabled(not busy)
        self.regen_btn.setEnabled(not busy and bool(self.conversation.history))
        self.stop_btn.setEnabled(self.job is not None)

    # -- window hooks ------------------------------------------------------------------------------

    def is_busy(self) -> bool:
        return self.job is not None or self.load_job is not None

    def shutdown(self) -> None:
        self.stop()
        from PySide6.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(5000)
        self.unload()
