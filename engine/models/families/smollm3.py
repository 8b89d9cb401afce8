"""SmolLM3: the Llama converter with llama.cpp's ``smollm3`` graph, which leaves rope out of every fourth
layer."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import LLAMA_AWQ
from engine.models.families.llama import LlamaLike
from engine.models.families.registry import register

NO_ROPE_STEP = 4  # llama.cpp's smollm3 graph: layers 3, 7, 11, ... have no rope


@register
class SmolLM3(LlamaLike):
    name = "SmolLM3"
    architectures = ("SmolLM3ForCausalLM",)
    model_types = ("smollm3",)
    gguf_arch = gguf.MODEL_ARCH.SMOLLM3
    awq = LLAMA_AWQ

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        step = cfg.get("no_rope_layer_interval", NO_ROPE_STEP)
        n = self.hparams(cfg, where).n_layer
        want = [int((i + 1) % NO_ROPE_STEP != 0) for i in range(n)]
        layers = cfg.get("no_rope_layers")
        if step != NO_ROPE_STEP or (layers is not None and list(layers) != want):
            raise NibbleError(f"{where}: no_rope_layers / no_rope_layer_interval differ from every "
                              f"{NO_ROPE_STEP}th layer, the only pattern llama.cpp's SmolLM3 graph runs")
