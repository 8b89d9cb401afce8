"""Qwen2-MoE (Qwen1.5-MoE) and Qwen3-MoE: experts stacked into 3-D tensors, routers in F32, Qwen2-MoE's
shared expert and its gate."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import Family
from engine.models.families.registry import register


class _QwenMoe(Family):
    rope_types = ("default", "linear", "yarn")
    norm_topk: bool
    awq_refusal = "AWQ of mixture-of-experts models is not implemented; quantize to GGUF instead"

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        if hp.n_ff_expert:
            w.add_expert_feed_forward_length(hp.n_ff_expert)
        if cfg.get("shared_expert_intermediate_size") is not None:
            w.add_expert_shared_feed_forward_length(hp.n_ff_shared)

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        if int(cfg.get("decoder_sparse_step", 1)) != 1 or cfg.get("mlp_only_layers"):
            raise NibbleError(f"{where}: decoder_sparse_step / mlp_only_layers make some layers dense; "
                              f"llama.cpp's {self.name} graph needs experts in every layer")
        if bool(cfg.get("norm_topk_prob", self.norm_topk)) != self.norm_topk:
            raise NibbleError(f"{where}: norm_topk_prob {cfg.get('norm_topk_prob')} differs from what llama.cpp's "
                              f"{self.name} graph does ({self.norm_topk}); the model would route differently")


@register
class Qwen2Moe(_QwenMoe):
    name = "Qwen2-MoE"
    architectures = ("Qwen2MoeForCausalLM",)
    model_types = ("qwen2_moe",)
    gguf_arch = gguf.MODEL_ARCH.QWEN2MOE
    norm_topk = False


@register
class Qwen3Moe(_QwenMoe):
    name = "Qwen3-MoE"
    architectures = ("Qwen3MoeForCausalLM",)
    model_types = ("qwen3_moe",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3MOE
    norm_topk = True
