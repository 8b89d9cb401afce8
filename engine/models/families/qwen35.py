"""Qwen3.5 and Qwen3.5-MoE: llama.cpp's ``qwen35``/``qwen35moe`` graphs. Three of every four layers are
linear attention (a gated delta net: a fused q/k/v projection, a short convolution, a decay A stored as log
and written as -exp(A), a gated norm), the others full attention with a gated query and q/k norms. Norms
store w - 1 (1 is added), except the linear attention's gated norm. Where linear attention has more value
heads than key heads, the value heads are reordered from grouped to tiled, as llama.cpp's converter does.
Rope covers part of each head and is multi-section (identical to plain rope on text). The
multi-token-prediction block is left out, as llama.cpp's converter does with --no-mtp; the text part of the
multimodal checkpoint converts. :class:`GatedDeltaNet` holds what Qwen3-Next shares."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import Family
from engine.models.families.hparams import global_rope
from engine.models.families.qwen_moe import _QwenMoe
from engine.models.families.registry import register

MROPE_SECTION = [11, 11, 10]  # what llama.cpp's converter writes when the config leaves it out
RECURRENT_LAYERS = "{arch}.attention.recurrent_layers"  # llama.cpp's key (newer than the installed gguf package)


class GatedDeltaNet(Family):
    """What Qwen3-Next and Qwen3.5 share: linear-attention layers beside full-attention ones, offset norms."""

    rope_types = ("default",)
    norm_offset = 1.0
    tile_v_heads = True  # llama.cpp's converter reorders value heads to tiled order (Qwen3.5, not Qwen3-Next)

    def _linear(self, cfg: dict) -> tuple[int, int, int, int]:
        return (int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"]),
                int(cfg["linear_key_head_dim"]), int(cfg["linear_value_head_dim"]))

    def _rope_dims(self, cfg, hp) -> int:
        return int(hp.head_dim * float(global_rope(cfg).get("partial_rotary_factor", 0.25)))

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        hp = self.hparams(cfg, where)
        for key in ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
                    "linear_conv_kernel_dim"):
            if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
                raise NibbleError(f"{where}: {key} is missing or not a positive number; {self.name} needs it")
        n_k, n_v, _, _ = self._linear(cfg)
        if n_v % n_k:
            raise NibbleError(f"{where}: linear_num_value_heads {n_v} is not a multiple of linear_num_key_heads {n_k}")
        types = cfg.get("layer_types")
        if types is not None and (not isinstance(types, list) or len(types) != hp.n_layer
                                  or set(types) - {"linear_attention", "full_attention"}):
            raise NibbleError(f"{where}: layer_types must list linear_attention or full_attention for each of the "
                              f"{hp.n_layer} layers")

    def ssm_shape(self, cfg):
        n_k, n_v, d_k, d_v = self._linear(cfg)
        return int(cfg["linear_conv_kernel_dim"]), d_v * n_v, n_k, d_k

    def recurrent_layers(self, cfg, hp):
        if cfg.get("layer_types") is not None:
            return tuple(t == "linear_attention" for t in cfg["layer_types"])
        interval = int(cfg.get("full_attention_interval", 4))
        return tuple((il + 1) % interval != 0 for il in range(hp.n_layer))

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        d_conv, d_inner, n_group, d_state = self.ssm_shape(cfg)
        w.add_ssm_conv_kernel(d_conv)
        w.add_ssm_state_size(d_state)
        w.add_ssm_group_count(n_group)
        w.add_ssm_time_step_rank(self._linear(cfg)[1])
        w.add_ssm_inner_size(d_inner)
        if cfg.get("layer_types") is not None:
            w.add_array(RECURRENT_LAYERS.format(arch=w.arch), [t == "linear_attention" for t in cfg["layer_types"]])
        w.add_full_attention_interval(int(cfg.get("full_attention_interval", 4)))
        w.add_rope_dimension_count(self._rope_dims(cfg, hp))

    def rename(self, hf_name):
        if hf_name.startswith(("mtp.", "model.mtp.")):
            return None  # the multi-token-prediction block: a draft head, not part of the model's output
        name = super().rename(hf_name)
        if name is not None and name.endswith(".linear_attn.dt_bias"):
            return name[: -len("dt_bias")] + "dt_proj.bias"
        return name

    def tensor_ops(self, gguf_name, hf_name, hp, cfg):
        ops: list[tuple[str, object]] = []
        if ".linear_attn." in hf_name:
            n_k, n_v, d_k, d_v = self._linear(cfg)
            if n_v != n_k and self.tile_v_heads:
                ops += self._tile_v_heads(hf_name, n_k, n_v // n_k, d_k, d_v)
            if hf_name.endswith(".A_log"):
                ops.append(("neg_exp", 0))
            elif ".conv1d." in hf_name:
                ops.append(("squeeze", 0))
            return tuple(ops)
        return super().tensor_ops(gguf_name, hf_name, hp, cfg)

    @staticmethod
    def _tile_v_heads(hf_name: str, n_k: int, per_k: int, d_k: int, d_v: int) -> list[tuple[str, object]]:
        """Value heads grouped by key head → tiled, where each linear-attention tensor holds them."""
        qk = 2 * n_k * d_k
        for part, arg in ((".in_proj_qkv.", (0, qk, n_k, per_k, d_v)), (".in_proj_z.", (0, 0, n_k, per_k, d_v)),
                          (".in_proj_a.", (0, 0, n_k, per_k, 1)), (".in_proj_b.", (0, 0, n_k, per_k, 1)),
                          (".A_log", (0, 0, n_k, per_k, 1)), (".dt_proj.", (0, 0, n_k, per_k, 1)),
                          (".conv1d.", (0, qk, n_k, per_k, d_v)), (".out_proj.", (1, 0, n_k, per_k, d_v))):
            if part in hf_name:
                return [("regroup", arg)]
        return []


class _Qwen35Base(GatedDeltaNet):
    text_of_multimodal = True

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        hp = self.hparams(cfg, where)
        section = global_rope(cfg).get("mrope_section", MROPE_SECTION)
        if not isinstance(section, list) or 2 * sum(section) != self._rope_dims(cfg, hp):
            raise NibbleError(f"{where}: rope_parameters.mrope_section {section} does not cover the "
                              f"{self._rope_dims(cfg, hp)} rotary dimensions (its sum must be half of them)")

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        section = list(global_rope(cfg).get("mrope_section", MROPE_SECTION))
        w.add_rope_dimension_sections((section + [0] * 4)[:4])


@register
class Qwen35(_Qwen35Base):
    name = "Qwen3.5"
    architectures = ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration")
    model_types = ("qwen3_5_text", "qwen3_5")
    gguf_arch = gguf.MODEL_ARCH.QWEN35
    awq_refusal = ("AWQ of Qwen3.5's linear-attention layers is not implemented; quantize Qwen3.5 to GGUF "
                   "instead")


@register
class Qwen35Moe(_Qwen35Base, _QwenMoe):
    name = "Qwen3.5-MoE"
    architectures = ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration")
    model_types = ("qwen3_5_moe_text", "qwen3_5_moe")
    gguf_arch = gguf.MODEL_ARCH.QWEN35MOE
    norm_topk = True
