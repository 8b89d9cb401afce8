"""Tiny random models of every registered family, for checking Nibble's converter against llama.cpp's.

Each is what a user downloads (config.json from transformers' own config class, safetensors, tokenizer
files, the family's chat template), float32 so llama.cpp's F32 run can be held to transformers', and
with wide weights (std 0.2) so a tensor mapped to the wrong place shows in the logits.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from tinymodels import LLAMA3_PATTERN, QWEN2_PATTERN, SAMPLE_TEXT, train_bpe_tokenizer, train_spm_tokenizer

GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                  "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
                  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
# Phi-4-mini's tokenizer.json splits text with the o200k (GPT-4o) pattern
GPT4O_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen3.5's tokenizer.json keeps combining marks with letters
QWEN35_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
PHI3_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5)
MOE = dict(num_experts_per_tok=2, moe_intermediate_size=32)
# Qwen3.5's hybrid layers at the smallest shapes that keep its features: linear attention with more value heads
# than key heads (so they are reordered), one full-attention layer, rope over a quarter of each head in sections
QWEN35 = dict(num_hidden_layers=4, head_dim=32, linear_key_head_dim=16, linear_value_head_dim=16,
              linear_num_key_heads=2, linear_num_value_heads=4, linear_conv_kernel_dim=4,
              layer_types=["linear_attention"] * 3 + ["full_attention"],
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                               "mrope_section": [2, 1, 1], "mrope_interleaved": True})

# key -> (model_type, tokenizer, BPE pre-tokenizer llama.cpp names it, config overrides)
SPECS: dict[str, tuple[str, str, str, dict]] = {
    "gemma2": ("gemma2", "gemma", "", dict(head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
                                           attn_logit_softcapping=50.0, final_logit_softcapping=30.0)),
    "gemma3": ("gemma3_text", "gemma", "", dict(head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
                                                num_hidden_layers=7)),
    "gemma3-vl": ("gemma3", "gemma", "", {}),
    "phi3": ("phi3", "spm", "", dict(original_max_position_embeddings=4096)),
    "phi4-mini": ("phi3", "gpt2", "gpt-4o", dict(
        max_position_embeddings=8192, original_max_position_embeddings=2048, tie_word_embeddings=True,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "long_factor": [1.0 + 0.25 * i for i in range(6)], "short_factor": [1.0] * 6,
                         "original_max_position_embeddings": 2048})),
    "smollm3": ("smollm3", "llama3", "llama-bpe", dict(num_hidden_layers=4, tie_word_embeddings=True)),
    "granite": ("granite", "llama3", "llama-bpe", dict(embedding_multiplier=12.0, residual_multiplier=0.22,
                                                      attention_multiplier=0.0625, logits_scaling=8.0)),
    "olmo2": ("olmo2", "llama3", "llama-bpe", {}),
    "olmo3": ("olmo3", "llama3", "llama-bpe", dict(num_hidden_layers=4, sliding_window=8)),
    "glm4": ("glm4", "glm4", "glm4", dict(head_dim=16, pad_token_id=None, bos_token_id=None)),
    "exaone4": ("exaone4", "qwen2", "qwen2", dict(sliding_window=None, layer_types=["full_attention"] * 2, head_dim=16,
                                                  rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                                   "factor": 16.0, "low_freq_factor": 1.0,
                                                                   "high_freq_factor": 4.0,
                                                                   "original_max_position_embeddings": 64})),
    "llama4": ("llama4_text", "llama4", "llama4", dict(
        head_dim=16, num_hidden_layers=4, num_local_experts=4, num_experts_per_tok=1, intermediate_size=32,
        intermediate_size_mlp=128, interleave_moe_layer_step=2, no_rope_layers=[1, 1, 1, 0],
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
    "llama4-vl": ("llama4", "llama4", "llama4", {}),
    "mixtral": ("mixtral", "spm", "", dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=None)),
    "qwen2moe": ("qwen2_moe", "qwen2", "qwen2", dict(num_experts=4, shared_expert_intermediate_size=64,
                                                      use_sliding_window=False, **MOE)),
    "qwen35": ("qwen3_5_text", "qwen35", "qwen35", QWEN35),
    "qwen35-vl": ("qwen3_5", "qwen35", "qwen35", {}),
    "qwen35moe": ("qwen3_5_moe_text", "qwen35", "qwen35",
                  dict(QWEN35, num_experts=4, shared_expert_intermediate_size=32, **MOE)),
    "qwen3next": ("qwen3_next", "qwen2", "qwen2",
                  dict(QWEN35, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                "partial_rotary_factor": 0.25},  # plain rope, no sections
                       num_experts=4, shared_expert_intermediate_size=32, **MOE)),
    "qwen3moe": ("qwen3_moe", "qwen2", "qwen2", dict(num_experts=4, norm_topk_prob=True, head_dim=16,
                                                      use_sliding_window=False, **MOE)),
}
# multimodal checkpoints, whose text part Nibble converts: key -> their transformers class
MULTIMODAL = {"gemma3-vl": "Gemma3ForConditionalGeneration", "qwen35-vl": "Qwen3_5ForConditionalGeneration",
              "llama4-vl": "Llama4ForConditionalGeneration"}
# llama.cpp's converter options for the reference file: the tiny models have no multi-token-prediction block
REFERENCE_ARGS: dict[str, list[str]] = {k: ["--no-mtp"] for k in ("qwen35", "qwen35-vl", "qwen35moe", "qwen3next")}


def _gemma_tokenizer(folder: Path) -> None:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SAMPLE_TEXT), model_writer=buf, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    cfg = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
           "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "chat_template": GEMMA_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


def tokenizer(folder: Path, kind: str) -> tuple[int, dict]:
    """Write a tokenizer of ``kind`` into ``folder``; returns its size and the config's special token ids."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind in ("gemma", "spm"):
        import sentencepiece as spm

        _gemma_tokenizer(folder) if kind == "gemma" else train_spm_tokenizer(folder)
        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        if kind == "spm":  # Phi-3's chat template, its markers as added tokens
            tc = json.loads((folder / "tokenizer_config.json").read_text())
            n = sp.vocab_size()
            tc["added_tokens_decoder"] = {str(n + i): {"content": t, "special": True} for i, t in
                                          enumerate(("<|user|>", "<|assistant|>", "<|end|>"))}
            tc["chat_template"] = PHI3_TEMPLATE
            (folder / "tokenizer_config.json").write_text(json.dumps(tc, indent=1))
            return n + 3, dict(bos_token_id=1, eos_token_id=2, pad_token_id=None)
        return sp.vocab_size(), dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    from tokenizers import Tokenizer

    pattern = {"llama3": LLAMA3_PATTERN, "glm4": LLAMA3_PATTERN, "gpt2": GPT4O_PATTERN,
               "qwen35": QWEN35_PATTERN, "llama4": GPT4O_PATTERN}.get(kind, QWEN2_PATTERN)
    train_bpe_tokenizer(folder, pattern, style="llama3" if kind in ("llama3", "llama4") else "qwen2")
    if kind == "glm4":  # GLM-4's chat markers, which its converter reads as special tokens
        t = Tokenizer.from_file(str(folder / "tokenizer.json"))
        t.add_special_tokens(["<|user|>", "<|assistant|>"])
        t.save(str(folder / "tokenizer.json"))
    if kind == "gpt2":  # Phi-4-mini declares a GPT-2 tokenizer class (and splits text as GPT-4o)
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        tc["tokenizer_class"] = "GPT2Tokenizer"
        (folder / "tokenizer_config.json").write_text(json.dumps(tc, indent=1))
    t = Tokenizer.from_file(str(folder / "tokenizer.json"))
    bos = t.token_to_id("<|begin_of_text|>") if kind in ("llama3", "llama4") else None
    return t.get_vocab_size(), dict(bos_token_id=bos, eos_token_id=t.token_to_id("<|im_end|>"),
                                    pad_token_id=None)


def make_family_model(folder: Path, key: str, *, std: float = 0.2, seed: int = 0, tok: str | None = None,
                      **config) -> Path:
    """A tiny random model of ``SPECS[key]`` in ``folder``, ``config`` overriding its config; with a tokenizer of
    kind ``tok`` if given (e.g. one transformers loads without sentencepiece's protobuf extras)."""
    import torch
    import transformers

    model_type, spec_tok, _, overrides = SPECS[key]
    tok = tok or spec_tok
    folder = Path(folder)
    n_vocab, special = tokenizer(folder, tok)
    kw = {**SHAPE, "vocab_size": n_vocab, **special, **overrides, **config}
    if key == "gemma3-vl":  # the text part of a Gemma 3 multimodal checkpoint, a tiny vision tower beside it
        text = {**SHAPE, "vocab_size": n_vocab, **special, "head_dim": 16, "sliding_window": 8,
                "query_pre_attn_scalar": 16}
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=32, patch_size=8)
        config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                           image_token_index=n_vocab - 1, **special)
    elif key == "qwen35-vl":  # Qwen3.5 as it ships: the language model beside a tiny vision tower
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, out_hidden_size=64,
                      num_position_embeddings=16)
        config = transformers.Qwen3_5Config(text_config={**SHAPE, "vocab_size": n_vocab, **special, **QWEN35},
                                            vision_config=vision, image_token_id=n_vocab - 1,
                                            video_token_id=n_vocab - 2, vision_start_token_id=n_vocab - 3,
                                            vision_end_token_id=n_vocab - 4)
    elif key == "llama4-vl":  # Llama 4 as it ships: the language model beside a tiny vision tower
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                      patch_size=14, vision_output_dim=32, projector_input_dim=32, projector_output_dim=32)
        text = {**SHAPE, "vocab_size": n_vocab, **special, **SPECS["llama4"][3]}
        config = transformers.Llama4Config(text_config=text, vision_config=vision, boi_token_index=n_vocab - 3,
                                           eoi_token_index=n_vocab - 2, image_token_index=n_vocab - 1)
    else:
        config = transformers.AutoConfig.for_model(model_type, **kw)
    multimodal = key in MULTIMODAL
    model_cls = getattr(transformers, MULTIMODAL[key]) if multimodal else transformers.AutoModelForCausalLM
    torch.manual_seed(seed)
    model = model_cls._from_config(config, dtype=torch.float32) if multimodal \
        else model_cls.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                # Gemma, Qwen3.5 and Qwen3-Next store norms as w - 1 (their gated linear-attention norm as w)
                offset = 0.0 if model_type.startswith(("gemma", "qwen3_5", "qwen3_next")) \
                    and "linear_attn" not in name else 1.0
                p.copy_(offset + std * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def logits_reference(folder: Path, ids: list[int]) -> np.ndarray:
    """transformers' float32 logits for ``ids``."""
    import torch
    import transformers

    cfg = json.loads((folder / "config.json").read_text())
    arch = cfg["architectures"][0]
    cls = getattr(transformers, arch) if arch in MULTIMODAL.values() else transformers.AutoModelForCausalLM
    model = cls.from_pretrained(folder, dtype=torch.float32)
    if arch == "Llama4ForConditionalGeneration":  # its text-only forward fails in transformers 5; the same weights
        model = model.language_model  # run through its language model, a Llama4ForCausalLM
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()
