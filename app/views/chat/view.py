"""Chat with a model: explicit Load / Unload with its GPU layers and context, a streaming reply rendered from
Markdown, Stop, Regenerate, Clear, time to first token, tokens/s, context fill, saved conversations."""

from __future__ import annotations

import pathlib
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread
from app.services import (
    AUTO_GPU_LAYERS,
    ChatSettings,
    Conversation,
    LoadedModel,
    ReplyFigures,
)
from app.settings import (
    CHAT_CONTEXT,
    CHAT_GPU_LAYERS,
    CHAT_MAX_TOKENS,
    CHAT_SYSTEM,
    CHAT_TEMPERATURE,
    CHAT_TOP_P,
)
from app.state import AppState, ModelEntry, kind_of
from app.views import View
from app.views.chat.model import ChatModel
from app.views.chat.panels import ChatInput
from app.views.chat.saved import SavedConversations, SavedList
from app.views.chat.transcript import Transcript
from app.widgets import Banner, ModelPicker


class ChatView(ChatModel, SavedConversations, View):
    reply_finished = Signal(str)  # the whole reply, after a stream ends (done or stopped)
    piece_shown = Signal(str)  # each streamed piece, once it is on screen
    loaded_changed = Signal()  # a model was loaded or unloaded
    model_loaded = Signal()  # a Load (or the load a Send started) finished
    saved_changed = Signal()  # the list of saved conversations was read again

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.conversation = Conversation()  # the history; its runtime is the loaded model
        self.runtime_path: str | None = None
        self.loaded: LoadedModel | None = None
        self._loaded_with: tuple[int, int] | None = None  # the GPU layers and context the model was loaded with
        self.saved_path: pathlib.Path | None = None  # the file this conversation was saved to or opened from
        self.reply = ""  # the answer as it streams
        self.job = None
        self.load_job = None
        self._t0 = 0.0
        self._first: float | None = None  # when the first piece of the reply arrived
        self._pieces = 0
        self._streaming = False
        self._clear_when_stopped = False
        self._closed = False
        self._redraw = QTimer(self, singleShot=True, interval=33)
        self._redraw.timeout.connect(self._redraw_now)

        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model:"))
        self.picker = ModelPicker(state)
        top.addWidget(self.picker, 1)
        self.load_btn = QPushButton("Load")
        self.load_btn.setToolTip("Load the model with the GPU layers and context set under Model")
        self.unload_btn = QPushButton("Unload")
        self.unload_btn.setToolTip("Free the memory the loaded model holds")
        top.addWidget(self.load_btn)
        top.addWidget(self.unload_btn)
        lay.addLayout(top)
        self.loaded_label = QLabel()
        self.loaded_label.setWordWrap(True)
        self.loaded_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.loaded_label)
        self.banner = Banner()
        lay.addWidget(self.banner)

        self.splitter = split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        lay.addWidget(split, 1)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.transcript = Transcript()
        ll.addWidget(self.transcript, 1)
        # what is typed and the figures below it keep to the transcript's reading column
        self.composer = QWidget()
        self.composer.setMaximumWidth(self.transcript.reading_width() + 40)
        cl = QVBoxLayout(self.composer)
        cl.setContentsMargins(0, 0, 0, 0)
        status = QHBoxLayout()
        self.stats = QLabel()
        self.stats.setWordWrap(True)
        self.stats.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.fill = QProgressBar()
        self.fill.setFixedWidth(150)
        self.fill.setFormat("context %p%")
        self.fill.setValue(0)
        status.addWidget(self.stats, 1)
        status.addWidget(self.fill)
        cl.addLayout(status)
        self.input = ChatInput()
        self.input.setMaximumHeight(110)
        cl.addWidget(self.input)
        brow = QHBoxLayout()
        self.send_btn = QPushButton("Send")
        self.send_btn.setDefault(True)
        self.stop_btn = QPushButton("Stop")
        self.regen_btn = QPushButton("Regenerate")
        self.clear_btn = QPushButton("Clear")
        self.save_btn = QPushButton("Save")
        self.save_btn.setToolTip("Save this conversation (Ctrl+S)")
        for b in (self.clear_btn, self.save_btn):
            brow.addWidget(b)
        brow.addStretch(1)
        for b in (self.regen_btn, self.stop_btn, self.send_btn):
            brow.addWidget(b)
        cl.addLayout(brow)
        crow = QHBoxLayout()  # centred: what the column cannot take goes to both sides alike
        crow.addStretch(1)
        crow.addWidget(self.composer, 1000)
        crow.addStretch(1)
        ll.addLayout(crow)
        split.addWidget(left)

        self.side = QTabWidget()
        split.addWidget(self.side)
        self._build_settings_tab(state)
        self.saved = SavedList()
        self.side.addTab(self.saved, "Saved")
        self.template = QPlainTextEdit(readOnly=True)
        self.template.setPlaceholderText("Load a model to see its chat template.")
        self.side.addTab(self.template, "Template")
        split.setStretchFactor(0, 1)
        split.setSizes([800, 300])

        self.send_btn.clicked.connect(self.send)
        self.input.submitted.connect(self.send)
        self.stop_btn.clicked.connect(self.stop)
        self.regen_btn.clicked.connect(self.regenerate)
        self.clear_btn.clicked.connect(self.clear)
        self.save_btn.clicked.connect(self.save)
        self.load_btn.clicked.connect(lambda: self.ensure_model(lambda: None, reload=True))
        self.unload_btn.clicked.connect(self.unload)
        self.saved.open_requested.connect(self.open_saved)
        self.saved.delete_requested.connect(self._delete_saved)
        self.transcript.copied.connect(lambda i: self.state_message(f"Message {i + 1} copied."))
        QShortcut(QKeySequence("Escape"), self, self.stop)
        QShortcut(QKeySequence.StandardKey.Save, self, self.save)
        self.picker.changed.connect(self._model_changed)
        for w in (self.gpu_layers, self.context):
            w.valueChanged.connect(self._show_loaded)
        self.setTabOrder(self.input, self.send_btn)
        self.setTabOrder(self.send_btn, self.stop_btn)
        self.setTabOrder(self.stop_btn, self.regen_btn)
        self._show_loaded()
        self._update_buttons()
        self.refresh_saved()

    def _build_settings_tab(self, state: AppState) -> None:
        box = QWidget()
        outer = QVBoxLayout(box)
        form = QFormLayout()
        outer.addLayout(form)
        outer.addStretch(1)
        self.system = QPlainTextEdit(state.get(CHAT_SYSTEM))
        self.system.setMaximumHeight(90)
        self.system.setTabChangesFocus(True)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.05)
        self.temperature.setValue(state.get(CHAT_TEMPERATURE))
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=1.0, singleStep=0.05)
        self.top_p.setValue(state.get(CHAT_TOP_P))
        self.max_tokens = QSpinBox(minimum=1, maximum=32768)
        self.max_tokens.setValue(state.get(CHAT_MAX_TOKENS))
        self.gpu_layers = QSpinBox(minimum=AUTO_GPU_LAYERS, maximum=999)
        self.gpu_layers.setSpecialValueText("auto")
        self.gpu_layers.setToolTip("GGUF: layers put on the GPU (0: CPU only; auto: all where there is a GPU). "
                                   "Originals and AWQ run on the GPU unless this is 0. Applies on the next Load.")
        self.gpu_layers.setValue(state.get(CHAT_GPU_LAYERS))
        self.context = QSpinBox(minimum=128, maximum=1_048_576, singleStep=1024, suffix=" tokens")
        self.context.setToolTip("The longest conversation the model holds (a GGUF's own limit caps it). "
                                "Applies on the next Load.")
        self.context.setValue(state.get(CHAT_CONTEXT))
        form.addRow("System prompt:", self.system)
        form.addRow("Temperature:", self.temperature)
        form.addRow("Top-p:", self.top_p)
        form.addRow("Max tokens:", self.max_tokens)
        form.addRow("GPU layers:", self.gpu_layers)
        form.addRow("Context:", self.context)
        self.side.addTab(box, "Settings")

    @property
    def runtime(self):
        """The loaded model, or None."""
        return self.conversation.runtime

    def state_message(self, text: str) -> None:
        win = self.window()
        if hasattr(win, "statusBar"):
            win.statusBar().showMessage(text, 4000)

    # -- model -------------------------------------------------------------------------------------

    def open_payload(self, payload: dict) -> None:
        path = payload.get("model")
        if path:
            self.picker.set_model(ModelEntry(path, kind_of(path)))

    def activated(self) -> None:
        self.input.setFocus()

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
        """Start a new conversation; a reply under way is stopped first."""
        if self.job is not None:
            self._clear_when_stopped = True
            self.stop()
            return
        self.conversation.reset()
        self.saved_path = None
        self.reply = ""
        self.fill.setValue(0)
        self.stats.clear()
        self._render()
        self._update_buttons()

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
        self._first = None
        self._streaming = True
        self._t0 = time.monotonic()
        self.stats.setText("Waiting for the first token…")
        self.fill.setRange(0, max(1, self.runtime.n_ctx))
        self.job = run_in_thread(
            services.chat_reply, self.conversation, pass_reporter=True,
            on_item=self._piece, on_result=self._done, on_cancelled=lambda: self._done(None),
            on_error=self._error, on_end=self._gen_ended,
        )
        self._render()
        self._update_buttons()

    def _piece(self, text: str) -> None:
        if self._first is None:
            self._first = time.monotonic()
        self.reply += text
        self._pieces += 1
        if not self._redraw.isActive():  # redraw at most ~30 times a second, however fast tokens come
            self._redraw.start()
        self.piece_shown.emit(text)

    def _speed_text(self, tokens_per_second: float | None) -> str:
        parts = []
        if self._first is not None:
            parts.append(f"first token {self._first - self._t0:.2f} s")
        if tokens_per_second:
            parts.append(f"{tokens_per_second:.1f} tokens/s")
        return " · ".join(parts)

    def _redraw_now(self) -> None:
        if not self._streaming:
            return
        now = time.monotonic()
        tps = (self._pieces - 1) / (now - self._first) if self._first and self._pieces > 1 and now > self._first else None
        self.stats.setText(self._speed_text(tps) or "Waiting for the first token…")
        if self.runtime is not None:
            self._show_fill(services.context_in_use(self.runtime), self.runtime.n_ctx)
        self.transcript.set_streaming(self.reply)

    def _show_fill(self, used: int, size: int) -> None:
        self.fill.setRange(0, max(1, size))
        self.fill.setValue(min(used, size))
        self.fill.setToolTip(f"{used:,} of {size:,} tokens of context used")

    def _done(self, figures: ReplyFigures | None) -> None:
        """The reply ended; ``figures`` is None when it was stopped (its text stays in the history)."""
        self._streaming = False
        self._redraw.stop()
        if figures is not None:
            self.stats.setText(f"{figures.completion_tokens} tokens · "
                               + self._speed_text(figures.tokens_per_second))
            self._show_fill(figures.context_used, figures.context_size)
        else:
            if self.runtime is not None:
                self._show_fill(services.context_in_use(self.runtime), self.runtime.n_ctx)
            self.stats.setText((self._speed_text(None) or "No reply") + " — stopped")
        self._render()
        self.reply_finished.emit(self.reply)

    def _gen_ended(self) -> None:
        self.job = None
        self._update_buttons()
        if self._clear_when_stopped:
            self._clear_when_stopped = False
            self.clear()

    def _error(self, message: str) -> None:
        self._streaming = False
        self._render()
        self.banner.show_message(message)
        self.stats.clear()

    def _render(self) -> None:
        self.transcript.set_messages(self.conversation.history, self.reply if self._streaming else None)

    def _update_buttons(self) -> None:
        busy = self.is_busy()
        has = bool(self.conversation.history)
        self.send_btn.setEnabled(not busy)
        self.regen_btn.setEnabled(not busy and has)
        self.save_btn.setEnabled(not busy and has)
        self.stop_btn.setEnabled(self.job is not None)
        self.load_btn.setEnabled(not busy)
        self.unload_btn.setEnabled(not busy and self.runtime is not None)
        self.saved.setEnabled(not busy)

    # -- window hooks ------------------------------------------------------------------------------

    def is_busy(self) -> bool:
        return self.job is not None or self.load_job is not None

    def shutdown(self) -> None:
        self.stop()
        from PySide6.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(5000)
        self._closed = True
        if self.load_job is not None and self.load_job.result is not None:  # loaded, not yet handed over
            services.close_model(self.load_job.result)
        self.job = self.load_job = None
        self.unload()
