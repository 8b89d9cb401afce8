"""The size of a GGUF's key/value section: read from a GGUF's header, or predicted for a conversion from a
Hugging Face folder's config and tokenizer files (the tokenizer's strings dominate it)."""

from __future__ import annotations

import gguf

from engine.models.families.hparams import text_config


def kv_section_bytes(reader: gguf.GGUFReader) -> int:
    """Bytes of a GGUF's key/value section as the quantizer will write it (with its two keys set)."""
    kv_bytes = sum(int(sum(p.nbytes for p in f.parts)) for f in reader.fields.values()
                   if not f.name.startswith("GGUF."))
    for key in ("general.file_type", "general.quantization_version"):
        if key not in reader.fields:
            kv_bytes += _u32_kv(key)
    return kv_bytes


def _u32_kv(key: str) -> int:
    return 8 + len(key.encode()) + 4 + 4


def _kv_string(key: str, value: str) -> int:
    return 8 + len(key.encode()) + 4 + 8 + len(value.encode())


def _kv_array_header(key: str) -> int:
    return 8 + len(key.encode()) + 4 + 4 + 8


def predict_metadata_bytes(config: dict, name: str, tokenizer: dict | None, tok_config: dict | None) -> int:
    """Predict the GGUF key/value section the converter writes: hyperparameters plus the tokenizer.

    The tokenizer dominates (one string per token, a type per token, merges); it is sized from
    tokenizer.json. Hyperparameter keys are a few dozen small values.
    """
    total = 24 * 60 + _kv_string("general.name", name)  # ~24 scalar keys of ~60 bytes
    total += _u32_kv("general.file_type") + _u32_kv("general.quantization_version")
    cfg = text_config(config)
    n_vocab = int(cfg.get("vocab_size") or 0)
    if tokenizer:
        model = tokenizer.get("model") or {}
        vocab = model.get("vocab") or {}
        if isinstance(vocab, list):  # unigram: [piece, score]
            pieces = [p[0] for p in vocab]
        else:
            pieces = list(vocab)
        added = [t.get("content", "") for t in tokenizer.get("added_tokens") or []]
        known = set(pieces)
        pieces += [a for a in added if a not in known]
        n_tok = max(len(pieces), n_vocab)
        pad = n_tok - len(pieces)
        total += _kv_array_header("tokenizer.ggml.tokens")
        total += sum(8 + len(p.encode()) for p in pieces) + pad * (8 + len("[PAD00000]"))
        total += _kv_array_header("tokenizer.ggml.token_type") + 4 * n_tok
        if model.get("type") in ("Unigram",) or model.get("byte_fallback"):
            total += _kv_array_header("tokenizer.ggml.scores") + 4 * n_tok
        merges = model.get("merges") or []
        if merges:
            total += _kv_array_header("tokenizer.ggml.merges")
            total += sum(8 + len((m if isinstance(m, str) else " ".join(m)).encode()) for m in merges)
        total += _kv_string("tokenizer.ggml.pre", "default") + _kv_string("tokenizer.ggml.model", "gpt2")
    if tok_config and isinstance(tok_config.get("chat_template"), str):
        total += _kv_string("tokenizer.chat_template", tok_config["chat_template"])
    return total
