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

import json
import pathlib
import sys

from engine.core.errors import NibbleError, check_at_least
from engine.models.resolve import resolve_model_path
from engine.runtime.base import GenerationResult, Runtime, check_same_vocab, sample_token
from engine.runtime.gguf import GGUF_MAGIC, GGUFRuntime, check_gguf, read_whole_gguf
from engine.runtime.torch_model import TorchRuntime, open_awq, open_hf

__all__ = [
    "GGUFRuntime", "GenerationResult", "Runtime", "TorchRuntime", "check_gguf", "check_same_vocab", "model_kind",
    "open_awq", "open_hf", "open_runtime", "read_whole_gguf", "sample_token", "uses_torch",
]


def model_kind(path: pathlib.Path) -> str:
    """'gguf', 'hf' or 'awq' for an existing path, or a NibbleError saying why it is none of them."""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head == GGUF_MAGIC:
            return "gguf"
        raise NibbleError(f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf file or a "
                          "Hugging Face model folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise NibbleError(f"{path} is a folder without config.json; pass a Hugging Face model folder or a .gguf file")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError:
        raise NibbleError(f"{cfg_path} is not valid JSON") from None
    qc = cfg.get("quantization_config") or {}
    method = str(qc.get("quant_method", "")).lower()
    if method == "awq":
        return "awq"
    if method:
        raise NibbleError(f"{path} is quantized with {method!r}, which Nibble does not run; use the original "
                          "model, a GGUF or an AWQ checkpoint")
    return "hf"


def open_runtime(path, *, device: str = "cpu", gpu_layers: int | None = None, n_ctx: int = 2048,
                 threads: int | None = None, dtype: str = "float32", share_with_torch: bool = False) -> Runtime:
    """Open a GGUF file, a Hugging Face folder or an AWQ folder as a :class:`Runtime`.

    ``device``: "cpu", "cuda" (or "cuda:N"), "mps", or "metal"/"gpu" for GGUF. ``gpu_layers`` applies to GGUF
    (None: all layers when a GPU device is named, none otherwise). ``n_ctx``: the longest sequence.
    ``share_with_torch``: this process also runs models through torch, so a GGUF on a GPU build of
    llama.cpp runs in a child process (see ``engine.core.llama``).
    """
    check_at_least(n_ctx, 1, "context length")
    check_at_least(threads, 1, "threads", optional=True)
    check_at_least(gpu_layers, -1, "GPU layers", optional=True)
    path = resolve_model_path(path)
    kind = model_kind(path)
    if kind == "gguf":
        from engine.core.llama import needs_own_process

        options = dict(device=device, gpu_layers=gpu_layers, n_ctx=n_ctx, threads=threads)
        if needs_own_process(share_with_torch):
            from engine.runtime.process import GGUFProcessRuntime

            return GGUFProcessRuntime(path, **options)
        return GGUFRuntime(path, **options)
    if device in ("metal", "gpu"):
        device = "mps" if sys.platform == "darwin" else "cuda"
    if kind == "awq":
        return open_awq(path, device=device, n_ctx=n_ctx)
    return open_hf(path, device=device, n_ctx=n_ctx, dtype=dtype)


def uses_torch(path) -> bool:
    """Whether opening ``path`` runs torch (an original Hugging Face model or an AWQ checkpoint)."""
    try:
        return model_kind(resolve_model_path(path)) != "gguf"
    except NibbleError:
        return False
