"""One interface over the three ways Nibble runs a model: GGUF, the original Hugging Face model, AWQ.

``open_runtime(path, ...)`` looks at what ``path`` is and returns a :class:`Runtime`:

- a ``.gguf`` file runs through llama-cpp-python (CPU, or CUDA / Metal where the installed build has them);
- a Hugging Face folder runs through transformers on cpu / cuda / mps, in float32 unless told otherwise;
- a folder whose ``config.json`` says ``quantization_config.quant_method == "awq"`` runs through
  Nibble's own AWQ loader (``engine.awq.loader.load_awq``).

Every runtime can tokenize, return logits for a token sequence, and stream a generation with stop strings
and cancel. Evaluation, chat, compare and bench are written once against this interface.
"""

from __future__ import annotations

import sys

from engine.core.errors import NibbleError, check_at_least
from engine.models.resolve import AWQ, GGUF, model_kind, resolve_model_path
from engine.runtime.base import GenerationResult, Runtime, check_same_vocab, sample_token
from engine.runtime.gguf import GGUFRuntime, check_gguf, read_whole_gguf
from engine.runtime.torch_model import TorchRuntime, open_awq, open_hf

__all__ = [
    "GGUFRuntime", "GenerationResult", "Runtime", "TorchRuntime", "check_gguf", "check_same_vocab", "model_kind",
    "open_awq", "open_hf", "open_runtime", "read_whole_gguf", "sample_token", "uses_torch",
]


def open_runtime(path, *, device: str = "cpu", gpu_layers: int | None = None, n_ctx: int = 2048,
                 threads: int | None = None, dtype: str = "float32", share_with_torch: bool = False,
                 kv_type: str = "f16") -> Runtime:
    """Open a GGUF file, a Hugging Face folder or an AWQ folder as a :class:`Runtime`.

    ``device``: "cpu", "cuda" (or "cuda:N"), "mps", or "metal"/"gpu" for GGUF. ``gpu_layers`` applies to GGUF
    (None: all layers when a GPU device is named, none otherwise). ``n_ctx``: the longest sequence.
    ``share_with_torch``: this process also runs models through torch, so a GGUF on a GPU build of
    llama.cpp runs in a child process (see ``engine.core.llama``). ``kv_type``: the GGUF runtime's KV cache
    type (f16, q8_0, q4_0, ...); the original and AWQ runtimes keep theirs in full precision and refuse others.
    """
    check_at_least(n_ctx, 1, "context length")
    check_at_least(threads, 1, "threads", optional=True)
    check_at_least(gpu_layers, -1, "GPU layers", optional=True)
    path = resolve_model_path(path)
    kind = model_kind(path)
    if kind == GGUF:
        from engine.core.llama import needs_own_process

        options = dict(device=device, gpu_layers=gpu_layers, n_ctx=n_ctx, threads=threads, kv_type=kv_type)
        if needs_own_process(share_with_torch):
            from engine.runtime.process import GGUFProcessRuntime

            return GGUFProcessRuntime(path, **options)
        return GGUFRuntime(path, **options)
    if kv_type != "f16":
        raise NibbleError(f"a quantized KV cache ({kv_type}) needs a GGUF model; {path} runs through torch, "
                          "whose cache stays in full precision", setting="KV cache type")
    if device in ("metal", "gpu"):
        device = "mps" if sys.platform == "darwin" else "cuda"
    if kind == AWQ:
        return open_awq(path, device=device, n_ctx=n_ctx)
    return open_hf(path, device=device, n_ctx=n_ctx, dtype=dtype)


def uses_torch(path) -> bool:
    """Whether opening ``path`` runs torch (an original Hugging Face model or an AWQ checkpoint)."""
    try:
        return model_kind(resolve_model_path(path)) != GGUF
    except NibbleError:
        return False
