"""GLM-4 (the 0414 models): llama.cpp's ``glm4`` graph. Biased q/k/v, a fused gate_up projection, norms
after attention and after the MLP besides the ones before, rope over part of each head; its Llama-3-style
pre-tokenizer is llama.cpp's ``glm4`` (which runs without BOS), and its converter marks <|endoftext|> and
<|user|> as the special tokens."""

from __future__ import annotations

import gguf

from engine.models.families.base import AwqSpec, Family
from engine.models.families.hparams import global_rope
from engine.models.families.registry import register


@register
class Glm4(Family):
    name = "GLM-4"
    architectures = ("Glm4ForCausalLM",)
    model_types = ("glm4",)
    gguf_arch = gguf.MODEL_ARCH.GLM4
    rope_types = ("default", "linear", "yarn")
    bpe_pre = {"llama-bpe": "glm4"}
    special_tokens = {"eos": "<|endoftext|>", "eot": "<|user|>", "unk": "<|endoftext|>", "bos": "<|endoftext|>"}
    # norms before and after each block; gate and up fused into one projection (up last)
    awq = AwqSpec(attn_post_norm="post_self_attn_layernorm", mlp_post_norm="post_mlp_layernorm",
                  mlp_in=("mlp.gate_up_proj",), up="mlp.gate_up_proj")

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        factor = float(global_rope(cfg).get("partial_rotary_factor", 0.5))
        w.add_rope_dimension_count(int(hp.head_dim * factor))

    def tokenizer_kind(self, detected, tokenizer_config):
        return "bpe"
