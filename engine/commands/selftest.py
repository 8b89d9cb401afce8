"""nibble selftest: prove this installation works end to end, without a screen or a network.

Prints the versions, quantizes the demo model (or ``--model``) to Q8_0 in a temporary folder with
llama.cpp's quantizer, loads the result in llama.cpp and generates a few tokens. Exit 0 on PASS,
1 on FAIL.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

from engine.commands import _args

NAME = "selftest"
HELP = "check this installation: quantize the demo model to Q8_0, load it and generate a few tokens"
ORDER = 90

PROMPT = "What is 2 plus 3?"


def add_arguments(p):
    p.add_argument("--model", default="demo",
                   help="Hugging Face model folder to test with (default: the demo model Nibble ships)")
    p.add_argument("--tokens", type=_args.positive_int("tokens"), default=8, help="tokens to generate (8)")
    p.add_argument("--threads", type=_args.positive_int("threads"), default=None, help="CPU threads (default: all)")


def _step(name: str, fn):
    started = time.perf_counter()
    print(f"- {name} ...", flush=True)
    value = fn()
    print(f"  ok ({time.perf_counter() - started:.1f} s)", flush=True)
    return value


def check_q8_0(path: Path) -> int:
    """Number of Q8_0 tensors in ``path``; raises if llama.cpp did not write a Q8_0 file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.get_field("general.file_type")
    ftype = int(field.parts[field.data[0]][0]) if field else None
    if ftype != int(gguf.LlamaFileType.MOSTLY_Q8_0):
        raise RuntimeError(f"{path.name}: general.file_type is {ftype}, not Q8_0")
    n = sum(1 for t in reader.tensors if t.tensor_type == gguf.GGMLQuantizationType.Q8_0)
    if n == 0:
        raise RuntimeError(f"{path.name} holds no Q8_0 tensor")
    return n


def generate(path: Path, n_tokens: int, threads: int | None) -> tuple[list[int], str]:
    """Greedy tokens from the quantized model, counted whether or not it stops early."""
    from engine.runtime import open_runtime  # a child process on GPU builds: see engine.core.llama

    with open_runtime(path, n_ctx=256, threads=threads) as rt:
        prompt = rt.tokenize(PROMPT, add_bos=True)
        tokens: list[int] = []
        logits = rt._prefill(prompt)
        while len(tokens) < n_tokens:
            tokens.append(int(logits.argmax()))
            logits = rt._step(tokens[-1])
        vocab = rt.n_vocab
        if len(tokens) != n_tokens or not all(0 <= t < vocab for t in tokens):
            raise RuntimeError(f"llama.cpp produced {tokens!r}, expected {n_tokens} token ids below {vocab}")
        return tokens, rt.detokenize(tokens)


def run(args) -> int:
    from engine.core.buildinfo import build_info, format_build_info
    from engine.core.errors import NibbleError
    from engine.models.source import resolve_model_path

    started = time.perf_counter()
    try:
        model = resolve_model_path(args.model)
    except NibbleError as exc:
        if args.model == "demo":
            raise NibbleError(f"{exc}; give a model folder with --model") from exc
        raise
    if args.tokens < 1:
        raise NibbleError("--tokens must be at least 1")
    print("\n".join(format_build_info(build_info())), flush=True)
    print(f"model: {model}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="nibble-selftest-") as tmp:
            from engine.gguf.quantize import quantize

            out = Path(tmp) / "selftest-Q8_0.gguf"
            res = _step("quantize to Q8_0 with llama.cpp",
                        lambda: quantize(model, "Q8_0", out, threads=args.threads))
            n_q8 = _step("read the GGUF back", lambda: check_q8_0(out))
            print(f"  {out.name}: {res.file_bytes / 2**20:.1f} MiB, {n_q8} Q8_0 tensors", flush=True)
            tokens, text = _step(f"load in llama.cpp and generate {args.tokens} tokens",
                                 lambda: generate(out, args.tokens, args.threads))
            print(f"  tokens {tokens}: {text!r}", flush=True)
    except NibbleError as exc:
        print(f"FAIL: {exc}", flush=True)
        return 1
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print("FAIL: see the error above", flush=True)
        return 1
    print(f"PASS ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0
