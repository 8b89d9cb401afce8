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

from app import calls, features
from app.features import field
from app.jobs import run_in_thread
from app.state import AppState, ModelEntry
from app.widgets import Banner, ModelPicker

DEFAULT_SYSTEM = "You are a helpful assistant."


def _escape(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")


class ChatView(QWidget):
    reply_finished = Signal(str)  # the whole reply, after a stream ends (done or stopped)
    piece_shown = Signal(str)  # each streamed piece, once it is on screen

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.runtime = None
        self.runtime_path: str | None = None
        self.messages: list[dict] = []
        self.reply = ""
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
        self.system = QPlainTextEdit(state.value("chat/system", DEFAULT_SYSTEM))
        self.system.setMaximumHeight(90)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.05)
        self.temperature.setValue(state.value("chat/temperature", 0.7, float))
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=1.0, singleStep=0.05)
        self.top_p.setValue(state.value("chat/top_p", 0.95, float))
        self.max_tokens = QSpinBox(minimum=1, maximum=32768)
        self.max_tokens.setValue(state.value("chat/max_tokens", 256, int))
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
        if not calls.runtime_available():
            self.banner.show_message(features.not_available_text("Chat (the model runtime)"), "warn")

    # -- model -------------------------------------------------------------------------------------

    def open_payload(self, payload: dict) -> None:
        path = payload.get("model")
        if path:
            from app.state import kind_of

            self.picker.set_model(ModelEntry(path, kind_of(path)))

    def _model_changed(self, entry: ModelEntry | None) -> None:
        if entry is None or entry.path == self.runtime_path or self.is_busy():
            return
        self.unload()

    def unload(self) -> None:
        if self.runtime is not None:
            calls.close_model(self.runtime)
        self.runtime = None
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
        if not calls.runtime_available():
            self.banner.show_message(features.not_available_text("Chat (the model runtime)"), "warn")
            return
        self.unload()
        self.stats.setText(f"Loading {entry.label}…")

        def loaded(rt):
            self.runtime, self.runtime_path = rt, entry.path
            self.template.setPlainText(str(field(rt, "chat_template", "") or "(the model has no chat template; "
                                                                          "a plain prompt format is used)"))
            self.stats.setText("Model loaded.")
            then()

        self.load_job = run_in_thread(calls.open_model, entry.path, on_result=loaded, on_error=self._error,
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
        self.messages.append({"role": "user", "content": text})
        self._render()
        self.ensure_model(self._generate)

    def regenerate(self) -> None:
        if self.is_busy():
            return
        while self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        if self.messages:
            self._render()
            self.ensure_model(self._generate)

    def clear(self) -> None:
        self.stop()
        self.messages.clear()
        self.reply = ""
        self.fill.setValue(0)
        self.stats.clear()
        self._render()

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def settings(self) -> dict:
        return {
            "temperature": self.temperature.value(),
            "top_p": self.top_p.value(),
            "max_tokens": self.max_tokens.value(),
        }

    def _generate(self) -> None:
        sysmsg = self.system.toPlainText().strip()
        self.state.set_value("chat/system", sysmsg)
        for k, v in self.settings().items():
            self.state.set_value(f"chat/{k}", v)
        msgs = ([{"role": "system", "content": sysmsg}] if sysmsg else []) + list(self.messages)
        self.reply = ""
        self._pieces = 0
        self._streaming = True
        self._t0 = time.monotonic()
        self.job = run_in_thread(
            calls.chat_stream, self.runtime, msgs, self.settings(), pass_reporter=True,
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

    def _done(self, result) -> None:
        self._streaming = False
        self._redraw.stop()
        self.messages.append({"role": "assistant", "content": self.reply})
        if result is not None:
            tps = field(result, "tokens_per_second")
            n = field(result, "completion_tokens", self._pieces)
            used, n_ctx = field(result, "context_used"), field(result, "context_size")
            if tps:
                self.stats.setText(f"{n} tokens, {tps:.1f} tokens/s")
            if used is not None and n_ctx:
                self.fill.setValue(int(100 * used / n_ctx))
                self.fill.setToolTip(f"{used} of {n_ctx} tokens of context used")
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
        for m in self.messages:
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
        self.regen_btn.setEnabled(not busy and bool(self.messages))
        self.stop_btn.setEnabled(self.job is not None)

    # -- window hooks ------------------------------------------------------------------------------

    def is_busy(self) -> bool:
        return self.job is not None or self.load_job is not None

    def shutdown(self) -> None:
        self.stop()
        from PySide6.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(5000)
        self.unload()
