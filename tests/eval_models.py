"""Tiny models for the evaluate / chat / compare / stats tests, built offline.

A Llama-architecture model with random weights (hidden 64, 2 layers, grouped-query attention) and a
Llama-2-style BPE tokenizer with byte fallback, trained with ``tokenizers`` on Nibble's evaluation text.
``tiny_llama_dir`` is the Hugging Face folder; ``tiny_gguf`` converts it with Nibble's converter.
"""

from __future__ import annotations

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EVAL_TEXT = ROOT / "resources" / "eval.txt"

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tokenizer(out_dir: pathlib.Path, vocab_size: int = 640, text: str | None = None) -> int:
    """Write tokenizer.json / tokenizer_config.json; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])

    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = norm
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(byte_tokens), special_tokens=specials,
                                  show_progress=False)
    text = text if text is not None else EVAL_TEXT.read_text(encoding="utf-8")
    trainer_tok.train_from_iterator(text.splitlines(), trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]

    # Llama layout: specials, then the 256 byte tokens, then the learned pieces.
    vocab: dict[str, int] = {}
    for piece in specials + byte_tokens:
        vocab[piece] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    for i, s in enumerate(specials):
        tok.add_special_tokens([s])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
    }))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return len(vocab)


def build_tiny_llama(out_dir: pathlib.Path, seed: int = 0, vocab_size: int = 640, text: str | None = None, *,
                     hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     intermediate: int = 128, init_std: float = 0.08) -> pathlib.Path:
    """A random-weight LlamaForCausalLM saved as safetensors (float32) with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    n_vocab = build_tokenizer(out_dir, vocab_size, text)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=n_vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so outputs depend on the input
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, init_std)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def convert(src: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The Hugging Face folder as an F32 GGUF."""
    try:
        from engine.gguf_convert import convert_to_gguf
    except ImportError:
        convert_to_gguf = None
    if convert_to_gguf is not None:
        convert_to_gguf(src, out)
        return out
    import os
    import subprocess
    import sys

    vendor = pathlib.Path("/tmp/setup/llama_cpp_python-0.3.36/vendor/llama.cpp")
    env = dict(os.environ, PYTHONPATH=str(vendor / "gguf-py"))
    subprocess.run([sys.executable, str(vendor / "convert_hf_to_gguf.py"), str(src), "--outfile", str(out),
                    "--outtype", "f32"], check=True, env=env, capture_output=True)
    return out


def quantize_gguf(src: pathlib.Path, qtype: str, out: pathlib.Path) -> pathlib.Path:
    try:
        from engine.quantize import quantize
    except ImportError:
        quantize = None
    if quantize is not None:
        quantize(src, qtype, out)
        return out
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> pathlib.Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama_dir, tmp_path_factory) -> pathlib.Path:
    return convert(tiny_llama_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny-f32.gguf")


@pytest.fixture(scope="session")
def tiny_gguf_q4(tiny_gguf, tmp_path_factory) -> pathlib.Path:
    return quantize_gguf(tiny_gguf, "Q4_0", tmp_path_factory.mktemp("tiny-q4") / "tiny-q4_0.gguf")
