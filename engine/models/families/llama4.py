"""Llama 4: llama.cpp's ``llama4`` graph. Experts (every ``interleave_moe_layer_step``-th layer) routed top-k
beside a shared expert, stored stacked and transposed (gate and up side by side in columns); chunked
attention over 8192-token chunks in three of every four layers, the fourth without rope; q/k L2-normed in
the rope layers; queries scaled up with position past 8192 tokens. llama.cpp's graph fixes the chunk size,
the rope-free pattern and the temperature tuning, so configs that differ are refused. Rope stays in the
checkpoint's interleaved order (no row permutation); the tokenizer's GPT-4o-style pattern is ``llama4``. The
multimodal checkpoint's language model converts, as llama.cpp's converter does."""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.models.families.llama import LlamaLike
from engine.models.families.registry import register

CHUNK = 8192  # llama.cpp's llama4 graph: attention chunk, and the temperature tuning's floor
NO_ROPE_STEP = 4  # llama.cpp's llama4 graph: layers 3, 7, 11, ... have no rope (and attend to everything)


@register
class Llama4(LlamaLike):
    name = "Llama 4"
    architectures = ("Llama4ForCausalLM", "Llama4ForConditionalGeneration")
    model_types = ("llama4_text", "llama4")
    text_of_multimodal = True
    gguf_arch = gguf.MODEL_ARCH.LLAMA4
    permute_qk = False
    rope_types = ("default", "llama3")
    bpe_pre = {"gpt-4o": "llama4"}
    awq_refusal = "AWQ of mixture-of-experts models is not implemented; quantize Llama 4 to GGUF instead"

    def config(self, raw):
        cfg = super().config(raw)
        # llama.cpp's converter reads intermediate_size as the experts' and intermediate_size_mlp as the dense
        # layers' feed-forward size
        return {**cfg, "moe_intermediate_size": cfg.get("intermediate_size"),
                "intermediate_size": cfg.get("intermediate_size_mlp", cfg.get("intermediate_size"))}

    def check(self, raw, where):
        super().check(raw, where)
        cfg = self.config(raw)
        hp = self.hparams(cfg, where)
        want_rope = [int((i + 1) % NO_ROPE_STEP != 0) for i in range(hp.n_layer)]
        types = cfg.get("layer_types")
        if types is not None and not all(t == "full_attention" for t in types) \
                and list(types) != ["chunked_attention" if r else "full_attention" for r in want_rope]:
            raise NibbleError(f"{where}: layer_types differ from three chunked layers to one full, the only "
                              "pattern llama.cpp's Llama 4 graph runs")
        for key, want in (("attention_chunk_size", CHUNK), ("floor_scale", CHUNK), ("attn_scale", 0.1),
                          ("attn_temperature_tuning", True), ("no_rope_layer_interval", NO_ROPE_STEP)):
            if cfg.get(key) is not None and cfg[key] != want:
                raise NibbleError(f"{where}: {key} {cfg[key]} differs from the {want} llama.cpp's Llama 4 graph "
                                  "runs with; the model would compute differently")
        if cfg.get("no_rope_layers") is not None and list(cfg["no_rope_layers"]) != want_rope:
            raise NibbleError(f"{where}: no_rope_layers differ from every {NO_ROPE_STEP}th layer, the only "
                              "pattern llama.cpp's Llama 4 graph runs")
        big = hp.n_expert == 128 and hp.n_layer == 48  # llama.cpp's 17B-128E type: no q/k norm
        if bool(cfg.get("use_qk_norm", True)) == big:
            raise NibbleError(f"{where}: use_qk_norm {cfg.get('use_qk_norm')} differs from what llama.cpp's "
                              f"Llama 4 graph does at {hp.n_layer} layers and {hp.n_expert} experts ({not big})")

    def write_hparams(self, w, cfg, hp):
        super().write_hparams(w, cfg, hp)
        w.add_interleave_moe_layer_step(int(cfg.get("interleave_moe_layer_step", 1)))
        w.add_expert_feed_forward_length(hp.n_ff_expert)
        types = cfg.get("layer_types")
        if types is not None and all(t == "full_attention" for t in types):
            w.add_sliding_window(0)  # no chunked layers

    def split_tensor(self, name, shape, cfg, where):
        if name.endswith(".feed_forward.experts.down_proj") and len(shape) == 3:
            return [(name + ".weight", (("transpose", 0),))]
        if name.endswith(".feed_forward.experts.gate_up_proj") and len(shape) == 3:
            n_ff, stem = shape[2] // 2, name[: -len("gate_up_proj")]
            return [(stem + "gate_proj.weight", (("slice", (2, 0, n_ff)), ("transpose", 0))),
                    (stem + "up_proj.weight", (("slice", (2, n_ff, 2 * n_ff)), ("transpose", 0)))]
        return super().split_tensor(name, shape, cfg, where)
