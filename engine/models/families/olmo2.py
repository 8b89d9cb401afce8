"""OLMo 2 and OLMo 3: norms after attention and MLP instead of before, q/k norms over the whole projection.
OLMo 3 adds sliding-window layers (every fourth layer global), which llama.cpp's ``olmo2`` graph runs from
the window and per-layer pattern its converter writes."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import Family
from engine.models.families.hparams import rope_parameters
from engine.models.families.registry import register


@register
class Olmo2(Family):
    name = "OLMo 2, OLMo 3"
    architectures = ("Olmo2ForCausalLM", "Olmo3ForCausalLM")
    model_types = ("olmo2", "olmo3")
    gguf_arch = gguf.MODEL_ARCH.OLMO2
    rope_types = ("default", "linear", "yarn")
    awq_refusal = "OLMo has no norm before attention for AWQ's scales to fold into; quantize it to GGUF"

    swa_period = 4  # OLMo 3 without layer_types: every fourth layer global, as llama.cpp's converter assumes

    def _pattern(self, cfg, hp) -> list[bool]:
        types = cfg.get("layer_types")
        if isinstance(types, list):
            return [t == "sliding_attention" for t in types]
        return list(self.swa_pattern(hp.n_layer))

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        if "sliding_window" in cfg:
            w.add_sliding_window(cfg["sliding_window"])
            w.add_sliding_window_pattern(self._pattern(cfg, hp))

    def check(self, raw, where):
        super().check(raw, where)
        rp = rope_parameters(self.config(raw))
        local, full = rp.get("sliding_attention"), rp.get("full_attention")
        if local is not None and full is not None and local != full:
            raise NibbleError(f"{where}: rope_parameters differ between sliding and full attention layers; "
                              "llama.cpp's OLMo graph uses one rope for both")
