"""Phi-3, Phi-3.5 and Phi-4-mini: fused qkv and gate_up projections kept fused, LongRoPE factors as
tensors, partial rotary dimensions; SentencePiece (Phi-3) or GPT-2-style BPE (Phi-4-mini) tokenizers."""

from __future__ import annotations

import math

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import Family
from engine.models.families.hparams import first, global_rope, rope_type
from engine.models.families.registry import register
from engine.models.families.tensors import F32, PlannedTensor


@register
class Phi3(Family):
    name = "Phi-3 / Phi-4-mini"
    architectures = ("Phi3ForCausalLM",)
    model_types = ("phi3",)
    gguf_arch = gguf.MODEL_ARCH.PHI3
    rope_types = ("default", "longrope", "su")
    awq_refusal = "AWQ for Phi-3 is not implemented yet; quantize it to GGUF"

    def _rope_dims(self, cfg, hp) -> int:
        return int(float(global_rope(cfg).get("partial_rotary_factor", 1.0)) * hp.n_embd) // hp.n_head

    def _orig_ctx(self, cfg, where="config.json") -> int:
        v = first(global_rope(cfg), ("original_max_position_embeddings",), cfg.get("original_max_position_embeddings"))
        if v is None:
            raise NibbleError(f"{where} lacks original_max_position_embeddings, which Phi-3 models need")
        return int(v)

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        hp = self.hparams(cfg, where)
        self._orig_ctx(cfg, where)
        rp = global_rope(cfg)
        if rope_type(cfg) in ("longrope", "su"):
            half = self._rope_dims(cfg, hp) / 2
            for key in ("long_factor", "short_factor"):
                if not isinstance(rp.get(key), list) or len(rp[key]) != half:
                    raise NibbleError(f"{where}: rope scaling {key} must list {half:g} numbers "
                                      f"(half the rotary dimensions); the config is inconsistent")

    def write_hparams(self, w, cfg, hp):
        rp = global_rope(cfg)
        orig = self._orig_ctx(cfg)
        w.add_context_length(hp.n_ctx_train)
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_embedding_length(hp.n_embd)
        w.add_feed_forward_length(hp.n_ff)
        w.add_block_count(hp.n_layer)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        w.add_rope_dimension_count(self._rope_dims(cfg, hp))
        w.add_rope_freq_base(hp.rope_theta)
        w.add_sliding_window(int(cfg.get("sliding_window") or 0))
        if rp.get("long_factor"):
            scale = hp.n_ctx_train / orig
            factor = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            w.add_rope_scaling_attn_factors(factor)

    def extra_tensors(self, cfg, hp):
        rp = global_rope(cfg)
        if not rp.get("long_factor"):
            return []
        n = len(rp["long_factor"])
        return [PlannedTensor("rope_factors_long.weight", (), (n,), F32, values=tuple(map(float, rp["long_factor"]))),
                PlannedTensor("rope_factors_short.weight", (), (n,), F32, values=tuple(map(float, rp["short_factor"])))]

    def tokenizer_kind(self, detected, tokenizer_config):
        if tokenizer_config.get("tokenizer_class") == "GPT2Tokenizer":
            return "bpe"
        return detected
