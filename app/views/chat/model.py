"""Chat's model: Load (a worker thread loads the picked model with the GPU layers and context under Settings),
Unload, and the line that says what is loaded and with what."""

from __future__ import annotations

from app import services
from app.jobs import run_in_thread
from app.services import AUTO_GPU_LAYERS
from app.settings import CHAT_CONTEXT, CHAT_GPU_LAYERS
from app.state import ModelEntry


class ChatModel:
    """The model half of :class:`app.views.chat.view.ChatView`, which holds the widgets and state it uses."""

    def _model_changed(self, entry: ModelEntry | None) -> None:
        if entry is None or entry.path == self.runtime_path or self.is_busy():
            return
        self.unload()

    def unload(self) -> None:
        if self.is_busy():
            return
        had = self.conversation.runtime is not None
        services.close_model(self.conversation.runtime)
        self.conversation.runtime = None
        self.runtime_path = None
        self.loaded = None
        self.template.clear()
        self._show_loaded()
        self._update_buttons()
        if had:
            self.loaded_changed.emit()

    def ensure_model(self, then, reload: bool = False) -> None:
        """Load the picked model in a worker if it is not loaded (or ``reload``), then call ``then()``."""
        entry = self.picker.current()
        if entry is None:
            self.banner.show_message("Pick a model first (Browse… opens a GGUF file or a model folder).")
            return
        if self.runtime is not None and self.runtime_path == entry.path and not reload:
            then()
            return
        if self.is_busy():
            return
        self.unload()
        self.banner.clear()
        layers, context = self.gpu_layers.value(), self.context.value()
        self.state.put(CHAT_GPU_LAYERS, layers)
        self.state.put(CHAT_CONTEXT, context)
        self.loaded_label.setText(f"Loading {entry.label}…")

        def loaded(rt):
            if self._closed:  # the window closed while it loaded
                services.close_model(rt)
                return
            self.conversation.runtime, self.runtime_path = rt, entry.path
            self.loaded = services.loaded_model(rt, layers)
            self._loaded_with = (layers, context)
            self.template.setPlainText(rt.chat_template or "(the model has no chat template; "
                                                           "a plain prompt format is used)")
            self._show_loaded()
            self.loaded_changed.emit()
            self.model_loaded.emit()
            then()

        self.load_job = run_in_thread(services.load_chat_model, entry.path, gpu_layers=layers, context=context,
                                      on_result=loaded, on_error=self._load_failed, on_end=self._load_ended)
        self._update_buttons()

    def _load_failed(self, message: str) -> None:
        self._show_loaded()
        self._error(message)

    def _load_ended(self) -> None:
        self.load_job = None
        self._update_buttons()

    def _show_loaded(self) -> None:
        m = self.loaded
        if m is None:
            self.loaded_label.setText("No model loaded. Load takes the GPU layers and context under Settings; "
                                      "Send loads the picked model too.")
            return
        layers = {AUTO_GPU_LAYERS: "auto", 0: "none"}.get(m.gpu_layers, str(m.gpu_layers))
        text = f"Loaded: {m.name} ({m.kind}) on {m.device}, context {m.context:,} tokens, GPU layers {layers}"
        if (self.gpu_layers.value(), self.context.value()) != self._loaded_with:
            text += " — changed settings apply on the next Load"
        if m.notices:
            text += ". " + "; ".join(m.notices)
        self.loaded_label.setText(text)
