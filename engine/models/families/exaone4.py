"""EXAONE 4: llama.cpp's ``exaone4`` graph. Norms after attention and MLP (as OLMo 2), q/k norms per head,
Llama-3.1 rope factors as a tensor, a GPT-2-style BPE tokenizer. Sliding-window layers (without rope on the
global ones) only at the 32B's 64 layers: that is the one depth llama.cpp's graph runs them at."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import Family
from engine.models.families.hparams import global_rope, rope_type
from engine.models.families.llama import llama3_rope_factors
from engine.models.families.registry import register
from engine.models.families.tensors import F32, PlannedTensor

SWA_LAYERS = 64  # llama.cpp's exaone4 graph: sliding windows (and no rope on global layers) only at this depth


@register
class Exaone4(Family):
    name = "EXAONE 4"
    architectures = ("Exaone4ForCausalLM",)
    model_types = ("exaone4",)
    gguf_arch = gguf.MODEL_ARCH.EXAONE4
    rope_types = ("default", "linear", "yarn", "llama3")
    awq_refusal = "EXAONE 4 has no norm before attention for AWQ's scales to fold into; quantize it to GGUF"

    def _pattern(self, cfg: dict, n_layer: int) -> list[bool] | None:
        """Which layers are windowed, as llama.cpp's converter reads it (None: it writes no pattern)."""
        if "layer_types" in cfg:
            return [t == "sliding_attention" for t in cfg["layer_types"]]
        p = cfg.get("sliding_window_pattern")
        if isinstance(p, str) and p:  # e.g. "LLLG"
            return [p[i % len(p)] == "L" for i in range(n_layer)]
        if isinstance(p, int) and not isinstance(p, bool) and p > 0:
            return [(i + 1) % p != 0 for i in range(n_layer)]
        return None

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        if rope_type(cfg) == "llama3" and global_rope(cfg).get("factor") is None:
            raise NibbleError(f"{where}: rope scaling 'llama3' without a factor; the config is incomplete")
        n = self.hparams(cfg, where).n_layer
        if cfg.get("sliding_window") is not None and n != SWA_LAYERS:
            raise NibbleError(f"{where}: sliding_window is set at {n} layers; llama.cpp's EXAONE 4 graph runs sliding "
                              f"windows only at {SWA_LAYERS} layers (the 32B) and would run this model differently")

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        w.add_vocab_size(hp.n_vocab)
        if cfg.get("sliding_window") is not None:
            w.add_sliding_window(cfg["sliding_window"])
            pattern = self._pattern(cfg, hp.n_layer)
            if pattern is not None and len(pattern) == hp.n_layer:
                w.add_sliding_window_pattern(pattern)

    def swa_layers(self, cfg, hp):
        pattern = self._pattern(cfg, hp.n_layer) if cfg.get("sliding_window") else None
        return tuple(pattern) if pattern and len(pattern) == hp.n_layer and any(pattern) else ()

    def extra_tensors(self, cfg, hp):
        if rope_type(cfg) != "llama3":
            return []
        f = llama3_rope_factors(cfg, hp)
        return [PlannedTensor("rope_freqs.weight", (), f.shape, F32, values=tuple(float(x) for x in f))]

    def tokenizer_kind(self, detected, tokenizer_config):
        return "bpe"
