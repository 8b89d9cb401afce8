"""Llama and Mistral: llama.cpp's ``llama`` graph, q/k rows permuted to its rope order, Llama-3.1 rope
factors as a tensor."""

from __future__ import annotations

import math

import gguf
import numpy as np

from engine.models.families.base import LLAMA_AWQ, Family
from engine.models.families.hparams import Hparams, global_rope, rope_type
from engine.models.families.registry import register
from engine.models.families.tensors import F32, PlannedTensor


def llama3_rope_factors(cfg: dict, hp: Hparams) -> np.ndarray:
    """Per-frequency divisors for Llama-3.1-style rope scaling (the ``rope_freqs.weight`` tensor)."""
    rp = global_rope(cfg)
    factor = float(rp.get("factor", 8.0))
    low = float(rp.get("low_freq_factor", 1.0))
    high = float(rp.get("high_freq_factor", 4.0))
    old_ctx = float(rp.get("original_max_position_embeddings", 8192))
    # float32, as transformers computes its inverse frequencies
    dims = np.arange(0, hp.head_dim, 2, dtype=np.float32) / np.float32(hp.head_dim)
    freqs = (1.0 / (np.float32(hp.rope_theta) ** dims)).astype(np.float32)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


class LlamaLike(Family):
    """What llama.cpp's LlamaModel converter does, which its descendants (Granite, SmolLM3, Mixtral) share."""

    gguf_arch = gguf.MODEL_ARCH.LLAMA
    permute_qk = True
    rope_types = ("default", "linear", "yarn", "llama3")

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        w.add_vocab_size(hp.n_vocab)
        w.add_rope_dimension_count(hp.head_dim)

    def write_vocab_extras(self, w, cfg, model_dir, tokenizer_config):
        if tokenizer_config.get("add_prefix_space") is not None:
            w.add_add_space_prefix(bool(tokenizer_config["add_prefix_space"]))
        if cfg.get("vocab_size", 32000) == 49152:  # llama.cpp's rule for Granite's small models
            w.add_add_bos_token(False)

    def extra_tensors(self, cfg, hp):
        if rope_type(cfg) != "llama3":
            return []
        f = llama3_rope_factors(cfg, hp)
        return [PlannedTensor("rope_freqs.weight", (), f.shape, F32, values=tuple(float(x) for x in f))]


@register
class Llama(LlamaLike):
    name = "Llama, Mistral"
    architectures = ("LlamaForCausalLM", "MistralForCausalLM")
    model_types = ("llama", "mistral")
    awq = LLAMA_AWQ
