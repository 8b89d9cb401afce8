"""Options shared by the commands that run models (eval, bench, chat, compare)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from engine.commands import _args

if TYPE_CHECKING:
    from engine.runtime import Runtime


def add_runtime_arguments(parser, ctx_default: int = 2048, ctx_help: str | None = None) -> None:
    g = parser.add_argument_group("running the models")
    g.add_argument("--device", default="cpu",
                   help="cpu, cuda, mps (Hugging Face / AWQ) or cuda / metal (GGUF; needs a GPU build of "
                        "llama-cpp-python). Default: cpu")
    g.add_argument("--gpu-layers", type=_args.gpu_layers, default=None, metavar="N",
                   help="GGUF: layers to put on the GPU (-1: all). Default: all when --device names a GPU")
    g.add_argument("--threads", type=_args.positive_int("threads"), default=None, metavar="N", help="GGUF: CPU threads (default: llama.cpp's)")
    g.add_argument("--ctx", type=_args.positive_int("tokens") if ctx_default else _args.non_negative_int("tokens"), default=ctx_default, metavar="TOKENS",
                   help=ctx_help or f"context length (default {ctx_default})")


def open_from_args(path: str, args, n_ctx: int | None = None, partner: str | None = None,
                   kv_type: str = "f16") -> Runtime:
    """Open ``path`` with the command's runtime options; ``partner``: the other model of a pair, if any;
    ``kv_type``: the KV cache type (GGUF)."""
    from engine.runtime import open_runtime, uses_torch

    rt = open_runtime(path, device=args.device, gpu_layers=args.gpu_layers, n_ctx=n_ctx or args.ctx,
                      threads=args.threads, share_with_torch=partner is not None and uses_torch(partner),
                      kv_type=kv_type)
    for notice in rt.notices:
        print(f"nibble: note: {rt.name}: {notice}", file=sys.stderr)
    return rt


def quiet_libraries() -> None:
    """Keep transformers' progress bars and warnings off the terminal.

    Through the environment, read when transformers is imported, rather than by importing it here: a
    GGUF-only command then never loads torch, whose CUDA libraries need not share a process with
    llama.cpp's.
    """
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:  # imported already (engine.models): it read the environment then
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
