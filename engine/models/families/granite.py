"""Granite 3.x: the Llama converter with llama.cpp's ``granite`` graph and its four multipliers (embedding,
residual, attention, logits). head_dim in config.json is ignored, as llama.cpp's converter does."""

from __future__ import annotations

import gguf

from engine.models.families.llama import LlamaLike
from engine.models.families.registry import register


@register
class Granite(LlamaLike):
    name = "Granite"
    architectures = ("GraniteForCausalLM",)
    model_types = ("granite",)
    gguf_arch = gguf.MODEL_ARCH.GRANITE
    use_head_dim = False
    awq_refusal = "AWQ for Granite is not implemented yet; quantize it to GGUF"

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        for key, add in (("attention_multiplier", w.add_attention_scale),
                         ("embedding_multiplier", w.add_embedding_scale),
                         ("residual_multiplier", w.add_residual_scale),
                         ("logits_scaling", w.add_logit_scale)):
            if cfg.get(key):
                add(float(cfg[key]))
