"""Tiny models for the evaluate / chat / compare / bench / stats tests.

Built with the shared ``tinymodels`` factory (random weights, tokenizer trained offline), converted with
Nibble's own converter and quantized with Nibble's quantizer, once per test session (the fixtures are in conftest.py).
"""

from __future__ import annotations

import pathlib

from tinymodels import make_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
EVAL_TEXT = ROOT / "resources" / "eval.txt"


def build_tiny_llama(out_dir: pathlib.Path, seed: int = 0, family: str = "llama3", **shape) -> pathlib.Path:
    """A random-weight model saved in float32, so the Hugging Face run is the full-precision reference."""
    return make_model(out_dir, family, seed=seed, dtype="float32", **shape)


def convert(src: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    from engine.gguf.convert import convert_to_gguf

    convert_to_gguf(src, out)
    return out


def quantize_gguf(src: pathlib.Path, qtype: str, out: pathlib.Path) -> pathlib.Path:
    from engine.gguf.quantize import quantize

    quantize(src, qtype, out)
    return out
