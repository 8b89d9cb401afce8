"""Qwen3-Next: llama.cpp's ``qwen3next`` graph, Qwen3.5's gated-delta-net layers (see
:class:`~engine.models.families.qwen35.GatedDeltaNet`) with experts in every layer beside a gated shared
expert. Its linear attention stores q, k, v and the output gate z interleaved per key head in one
projection; llama.cpp keeps q/k/v (each part over all heads) and z as two tensors, and the value heads in
their grouped order. The multi-token-prediction block is left out, as llama.cpp's converter does with
--no-mtp."""

from __future__ import annotations

import gguf

from engine.models.families.qwen35 import GatedDeltaNet
from engine.models.families.qwen_moe import _QwenMoe
from engine.models.families.registry import register


@register
class Qwen3Next(GatedDeltaNet, _QwenMoe):
    name = "Qwen3-Next"
    architectures = ("Qwen3NextForCausalLM",)
    model_types = ("qwen3_next",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3NEXT
    norm_topk = True
    tile_v_heads = False

    def split_tensor(self, name, shape, cfg, where):
        if not name.endswith(".linear_attn.in_proj_qkvz.weight"):
            return super().split_tensor(name, shape, cfg, where)
        n_k, n_v, d_k, d_v = self._linear(cfg)
        widths = (d_k, d_k, n_v // n_k * d_v, n_v // n_k * d_v)  # q, k, v, z of one key head
        stem = name[: -len("in_proj_qkvz.weight")]
        return [(stem + "in_proj_qkv.weight", (("pick", (n_k, widths, (0, 1, 2))),)),
                (stem + "in_proj_z.weight", (("pick", (n_k, widths, (3,))),))]
