"""Qwen2/2.5 and Qwen3 (dense): llama.cpp's ``qwen2``/``qwen3`` graphs, q/k/v biases (Qwen2) or q/k
norms (Qwen3), NEOX rope so no row permutation."""

from __future__ import annotations

import gguf

from engine.models.families.base import LLAMA_AWQ, Family
from engine.models.families.registry import register


@register
class Qwen2(Family):
    name = "Qwen2/2.5"
    architectures = ("Qwen2ForCausalLM",)
    model_types = ("qwen2",)
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    rope_types = ("default", "linear", "yarn")
    awq = LLAMA_AWQ


@register
class Qwen3(Family):
    name = "Qwen3"
    architectures = ("Qwen3ForCausalLM",)
    model_types = ("qwen3",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3
    rope_types = ("default", "linear", "yarn")
    awq = LLAMA_AWQ
