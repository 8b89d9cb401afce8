"""Plain Llama-style decoder layers for AWQ's calibration passes, built without transformers' modelling code.

Importing transformers' modelling code costs seconds before any work: 2 s on a 2-core CPU, 10.8 s on a fresh
GPU machine, where the whole 1B-shaped AWQ command is meant to take 15. For the families whose layers are
plain Llama (Llama, Mistral, Qwen2, Qwen3), :func:`build` makes the layers here, under the checkpoint's own
tensor names, computing what transformers' sdpa layers compute (``tests/test_awq_native.py`` holds them to
transformers' whole model). Any variant not described here (another activation or rope type, a config that
leaves a shape to its class's default) returns None, and AWQ builds transformers' own model instead.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.families.hparams import Hparams, global_rope, rope_type

# model_type -> (q/k/v biases: a config key or a fixed answer, o bias, MLP biases, q/k norms)
KINDS = {
    "llama": ("attention_bias", "attention_bias", "mlp_bias", False),
    "mistral": (False, False, False, False),
    "qwen2": (True, False, False, False),
    "qwen3": ("attention_bias", "attention_bias", False, True),
}
ROPE_TYPES = ("default", "linear", "llama3")


def _flag(cfg: dict, how) -> bool:
    return bool(cfg.get(how, False)) if isinstance(how, str) else how


def build(raw: dict, family):
    """(config, meta-device model) for ``raw`` (config.json) of ``family``, or None where this module does not
    describe the model exactly and transformers' own model must be built."""
    kind = KINDS.get(raw.get("model_type"))
    if kind is None or raw.get("text_config") or str(raw.get("hidden_act", "silu")) != "silu":
        return None
    if rope_type(raw) not in ROPE_TYPES or raw.get("pretraining_tp", 1) not in (1, None):
        return None
    if raw.get("num_key_value_heads") is None or (raw.get("model_type") == "qwen3" and raw.get("head_dim") is None):
        return None  # left to the config class's default (8 for Mistral, 32 for Qwen; head_dim 128 for Qwen3)
    cfg = family.config(raw)
    hp = family.hparams(cfg)
    qkv_bias, o_bias, mlp_bias, qk_norm = kind
    config = SimpleNamespace(
        num_hidden_layers=hp.n_layer, hidden_size=hp.n_embd, intermediate_size=hp.n_ff,
        num_attention_heads=hp.n_head, num_key_value_heads=hp.n_head_kv, head_dim=hp.head_dim,
        vocab_size=hp.n_vocab, rms_norm_eps=hp.rms_eps, layer_types=None, _attn_implementation="sdpa",
        qkv_bias=_flag(raw, qkv_bias), o_bias=_flag(raw, o_bias), mlp_bias=_flag(raw, mlp_bias), qk_norm=qk_norm,
        inv_freq=_inv_freq(cfg, hp))
    with torch.device("meta"):
        model = Model(config)
    return config, model


def _inv_freq(cfg: dict, hp: Hparams) -> torch.Tensor:
    """Rope's inverse frequencies as transformers computes them for the rope types in ROPE_TYPES."""
    inv = 1.0 / (hp.rope_theta ** (torch.arange(0, hp.head_dim, 2, dtype=torch.int64).float() / hp.head_dim))
    kind = rope_type(cfg)
    if kind == "linear":
        inv = inv / float(global_rope(cfg)["factor"])
    elif kind == "llama3":
        from engine.models.families.llama import llama3_rope_factors

        inv = inv / torch.from_numpy(np.asarray(llama3_rope_factors(cfg, hp), dtype=np.float32))
    return inv


class Linear(nn.Linear):
    """A linear whose weights come from the checkpoint: no random initialisation (on the meta device that goes
    through torch's reference kernels, whose first use imports torch's compiler, a second or more)."""

    def reset_parameters(self):
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self):
        pass


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Rotary(nn.Module):
    """cos and sin [1, L, head_dim] for positions [1, L], called as transformers' rotary embedding is."""

    def __init__(self, config):
        super().__init__()
        self.inv_freq = config.inv_freq

    def forward(self, x, position_ids):
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c.hidden_size, c.head_dim
        self.head_dim, self.scaling = hd, hd ** -0.5
        self.num_key_value_groups = c.num_attention_heads // c.num_key_value_heads
        self.q_proj = Linear(d, c.num_attention_heads * hd, bias=c.qkv_bias)
        self.k_proj = Linear(d, c.num_key_value_heads * hd, bias=c.qkv_bias)
        self.v_proj = Linear(d, c.num_key_value_heads * hd, bias=c.qkv_bias)
        self.o_proj = Linear(c.num_attention_heads * hd, d, bias=c.o_bias)
        if c.qk_norm:
            self.q_norm = RMSNorm(hd, c.rms_norm_eps)
            self.k_norm = RMSNorm(hd, c.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, **_):
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q, k = self.q_proj(hidden_states).view(shape), self.k_proj(hidden_states).view(shape)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        groups = self.num_key_value_groups
        if groups > 1 and attention_mask is not None:  # as transformers: shared heads repeated where a mask is given
            k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, is_causal=attention_mask is None,
                                           scale=self.scaling, enable_gqa=groups > 1 and attention_mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)), None


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn, self.mlp = Attention(c), MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, **_):
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)[0]
        return h + self.mlp(self.post_attention_layernorm(h))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.rotary_emb = Rotary(c)


class Model(nn.Module):
    """What AWQ reads of a causal LM: ``model.embed_tokens``, ``model.layers``, ``model.rotary_emb``, ``config``."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Body(config)

    def _init_weights(self, module):  # every tensor of these layers is in the checkpoint
        pass
