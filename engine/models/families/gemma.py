"""Gemma 2 and Gemma 3: norms stored as w - 1 (llama.cpp's graph wants w, so 1 is added), sliding-window
layers in a fixed pattern, logit softcapping; Gemma 3 also as the text part of its multimodal checkpoints."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.base import Family
from engine.models.families.hparams import global_rope, rope_parameters
from engine.models.families.registry import register


class _Gemma(Family):
    norm_offset = 1.0
    tokenizer = "SentencePiece"
    awq_refusal = "AWQ for Gemma is not implemented yet; quantize it to GGUF"

    big_layers: int  # llama.cpp scales queries by hidden_size / heads at this depth (27B), else by head_dim

    def write_vocab_extras(self, w, cfg, model_dir, tokenizer_config):
        if (model_dir / "tokenizer.model").is_file():
            w.add_add_space_prefix(False)

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        hp = self.hparams(cfg, where)
        want = hp.n_embd // hp.n_head if hp.n_layer == self.big_layers else hp.head_dim
        scalar = cfg.get("query_pre_attn_scalar")
        if isinstance(scalar, (int, float)) and scalar != want:
            raise NibbleError(f"{where}: query_pre_attn_scalar {scalar} differs from the {want} llama.cpp's "
                              f"{self.name} graph scales queries by at {hp.n_layer} layers")


@register
class Gemma2(_Gemma):
    name = "Gemma 2"
    architectures = ("Gemma2ForCausalLM",)
    model_types = ("gemma2",)
    gguf_arch = gguf.MODEL_ARCH.GEMMA2
    rope_types = ("default",)
    skip_lm_head = True  # llama.cpp's converter leaves it out: Gemma 2 ties its embeddings
    swa_period = 2
    big_layers = 46

    def write_hparams(self, w, cfg, hp):
        # llama.cpp's Gemma 2 converter writes exactly these (rope base and the rest are its defaults)
        w.add_context_length(hp.n_ctx_train)
        w.add_embedding_length(hp.n_embd)
        w.add_block_count(hp.n_layer)
        w.add_feed_forward_length(hp.n_ff)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
        if cfg.get("attn_logit_softcapping") is not None:
            w.add_attn_logit_softcapping(float(cfg["attn_logit_softcapping"]))
        if cfg.get("final_logit_softcapping") is not None:
            w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
        if hp.sliding_window:
            w.add_sliding_window(hp.sliding_window)


@register
class Gemma3(_Gemma):
    name = "Gemma 3"
    architectures = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
    model_types = ("gemma3_text", "gemma3")
    gguf_arch = gguf.MODEL_ARCH.GEMMA3
    tokenizer = "SentencePiece or BPE"
    rope_types = ("default", "linear")
    default_theta = 1_000_000.0
    defaults = {"max_position_embeddings": 131072, "num_attention_heads": 8, "rms_norm_eps": 1e-6,
                "head_dim": 256, "num_key_value_heads": 4}
    text_of_multimodal = True
    swa_period = 6
    big_layers = 62

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        if global_rope(cfg).get("rope_theta") is None:  # global layers' base, when the config leaves it out
            w.add_rope_freq_base(self.default_theta)
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
        if cfg.get("sliding_window_pattern") != 1 and hp.sliding_window:
            w.add_sliding_window(hp.sliding_window)

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        if cfg.get("attn_logit_softcapping") is not None:
            raise NibbleError(f"{where}: attn_logit_softcapping is set, which Gemma 3 does not have; "
                              "llama.cpp's Gemma 3 graph would ignore it")
        local = rope_parameters(cfg).get("sliding_attention", {})
        if str(local.get("rope_type", "default")) != "default":
            raise NibbleError(f"{where}: rope_parameters.sliding_attention.rope_type {local['rope_type']!r} is not "
                              "one Nibble converts for Gemma 3 (local layers use plain rope)")
