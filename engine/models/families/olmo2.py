"""OLMo 2: norms after attention and MLP instead of before, q/k norms over the whole projection."""

from __future__ import annotations

import gguf

from engine.models.families.base import Family
from engine.models.families.registry import register


@register
class Olmo2(Family):
    name = "OLMo 2"
    architectures = ("Olmo2ForCausalLM",)
    model_types = ("olmo2",)
    gguf_arch = gguf.MODEL_ARCH.OLMO2
    rope_types = ("default", "linear", "yarn")
    awq_refusal = "OLMo 2 has no norm before attention for AWQ's scales to fold into; quantize it to GGUF"
