"""Tiny Hugging Face models of every supported family, with tokenizers trained offline.

Weights are random but the shapes are real (hidden 256, so K-quants apply), and every model folder is
what a user downloads: config.json, safetensors (optionally sharded), tokenizer files, a chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog. 1234567 apples cost $3.50 each!",
    "Hello, world!  Multiple   spaces, tabs\tand\nnew lines.\n\nParagraphs too.",
    "Ünïcödé façade naïve café — “quotes” and emoji 🙂 日本語のテキスト 中文 한국어",
    "def f(x):\n    return x ** 2  # squares\n\nprint(f(12))",
    "It's, I'm, we'll, they've, she'd, don't: contractions are everywhere. 3.14159 2.71828",
] * 20


def train_bpe_tokenizer(folder: Path, pattern: str, vocab_size: int = 400, style: str = "llama3") -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if style == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(ignore_merges=(style == "llama3")))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SAMPLE_TEXT, trainer)
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHATML_TEMPLATE,
           "model_max_length": 2048, "clean_up_tokenization_spaces": False}
    if style == "llama3":
        bos = specials[0]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
        cfg.update(bos_token=bos, eos_token="<|im_end|>", add_bos_token=True)
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        cfg.update(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", add_bos_token=False)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


def train_spm_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SAMPLE_TEXT), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "add_bos_token": True, "add_eos_token": False, "legacy": True,
           "chat_template": "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


FAMILIES = {
    "llama3": dict(arch="LlamaForCausalLM", model_type="llama", tok="llama3"),
    "llama2": dict(arch="LlamaForCausalLM", model_type="llama", tok="spm"),
    "mistral": dict(arch="MistralForCausalLM", model_type="mistral", tok="spm"),
    "qwen2": dict(arch="Qwen2ForCausalLM", model_type="qwen2", tok="qwen2"),
    "qwen3": dict(arch="Qwen3ForCausalLM", model_type="qwen3", tok="qwen2"),
}


def make_model(
    folder: Path,
    family: str = "llama3",
    *,
    hidden: int = 256,
    intermediate: int = 512,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    tied: bool = False,
    dtype: str = "bfloat16",
    shards: int = 1,
    rope_scaling: dict | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random model of ``family`` into ``folder`` and return it."""
    import torch
    import transformers

    spec = FAMILIES[family]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if spec["tok"] == "spm":
        train_spm_tokenizer(folder)
        import sentencepiece as spm

        vocab = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).vocab_size()
        bos, eos = 1, 2
    else:
        pattern = LLAMA3_PATTERN if spec["tok"] == "llama3" else QWEN2_PATTERN
        train_bpe_tokenizer(folder, pattern, style="llama3" if spec["tok"] == "llama3" else "qwen2")
        from tokenizers import Tokenizer

        t = Tokenizer.from_file(str(folder / "tokenizer.json"))
        vocab = t.get_vocab_size()
        bos = t.token_to_id("<|begin_of_text|>") if spec["tok"] == "llama3" else None
        eos = t.token_to_id("<|im_end|>")
    cfg_cls = transformers.AutoConfig.for_model(spec["model_type"]).__class__
    kwargs = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
        tie_word_embeddings=tied, bos_token_id=bos, eos_token_id=eos, rms_norm_eps=1e-5,
        architectures=[spec["arch"]],
    )
    if family in ("qwen2", "qwen3"):
        kwargs["use_sliding_window"] = False
    if family == "qwen3":
        kwargs["head_dim"] = hidden // heads
    if rope_scaling:
        kwargs["rope_scaling"] = rope_scaling
    config = cfg_cls(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.0 / np.sqrt(p.shape[-1])))
    model = model.to(getattr(torch, dtype))
    max_shard = None
    if shards > 1:
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        max_shard = f"{max(1, total // shards // 1000 + 1)}KB"
    model.save_pretrained(folder, safe_serialization=True, **({"max_shard_size": max_shard} if max_shard else {}))
    return folder
