"""Mixtral: the Llama converter with each layer's experts stacked into 3-D tensors and the router kept F32."""

from __future__ import annotations

from engine.models.families.llama import LlamaLike
from engine.models.families.registry import register


@register
class Mixtral(LlamaLike):
    name = "Mixtral"
    architectures = ("MixtralForCausalLM",)
    model_types = ("mixtral",)
    awq_refusal = "AWQ of mixture-of-experts models is not implemented; quantize Mixtral to GGUF instead"
