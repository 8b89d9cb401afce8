"""Chat's calls: loading a model to talk to, its figures, and streaming a reply."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.models.resolve import GGUF
from engine.runtime.chat import Conversation, ReplyFigures

from app.services.library import kind_of


# -- chat ------------------------------------------------------------------------------------------


def open_model(path: str, **options):
    """Load a model for generation (GGUF through llama.cpp, originals and AWQ through transformers)."""
    from engine.runtime import open_runtime

    # The app may load an original model through torch at any time: on GPU builds of llama.cpp a GGUF
    # then runs in a child process (see engine.core.llama).
    options.setdefault("share_with_torch", True)
    return open_runtime(path, **options)


AUTO_GPU_LAYERS = -1  # every layer on the GPU where the build and the machine have one, else none


@dataclass(frozen=True)
class LoadedModel:
    """What Chat has loaded, as its status line shows it."""

    path: str
    name: str
    kind: str
    device: str  # where it runs: "cpu", "gpu", "cuda", "mps"...
    context: int  # the context it was opened with (a GGUF's training context caps what was asked)
    gpu_layers: int  # as asked: AUTO_GPU_LAYERS, 0 (CPU only) or a number of layers
    notices: tuple[str, ...] = ()


def load_chat_model(path: str, *, gpu_layers: int = AUTO_GPU_LAYERS, context: int = 4096):
    """Open a model for Chat with its loading settings: ``gpu_layers`` (GGUF: layers offloaded to the GPU;
    originals and AWQ run on the GPU unless it is 0) and ``context`` (tokens). Runs in a worker thread."""
    kind = kind_of(path)
    if kind == GGUF:
        from engine.core.llama import gpu_build

        if gpu_layers == AUTO_GPU_LAYERS:
            options = {"device": "gpu", "gpu_layers": None} if gpu_build() else {"device": "cpu", "gpu_layers": 0}
        else:
            options = {"device": "gpu" if gpu_layers else "cpu", "gpu_layers": gpu_layers}
    else:
        gpu = gpu_layers != 0
        if gpu_layers == AUTO_GPU_LAYERS:
            import torch

            mps = getattr(torch.backends, "mps", None)
            gpu = torch.cuda.is_available() or bool(mps and mps.is_available())
        options = {"device": "gpu" if gpu else "cpu"}
    return open_model(path, n_ctx=context, **options)


def loaded_model(runtime, gpu_layers: int) -> LoadedModel:
    return LoadedModel(str(runtime.path), runtime.name, runtime.kind, str(runtime.device), int(runtime.n_ctx),
                       gpu_layers, tuple(runtime.notices))


def context_in_use(runtime) -> int:
    """Tokens of context the generation under way (or the last one) holds: its prompt and what it wrote."""
    gen = runtime.last_generation
    return int(gen.prompt_tokens) + len(gen.token_ids)


def close_model(runtime) -> None:
    if runtime is not None:
        runtime.close()


def chat_reply(conversation: Conversation, reporter) -> ReplyFigures | None:
    """Stream the model's answer to ``conversation`` as it stands; each piece goes to ``reporter.emit``.
    Stops between tokens when the reporter is cancelled. Returns the reply's figures."""
    for piece in conversation.reply(cancel=reporter.is_cancelled):
        reporter.emit(piece)
        time.sleep(0)  # let the UI thread take the interpreter between tokens
    return conversation.last_figures
