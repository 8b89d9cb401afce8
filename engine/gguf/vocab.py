"""Tokenizer → GGUF metadata, as llama.cpp's converter writes it.

BPE tokenizers are recognised by their pre-tokenizer pattern in tokenizer.json (not by hashing a
known vocabulary), so a fine-tune with a changed vocabulary converts like its base model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gguf

from engine.core.errors import NibbleError

# The regexes that llama.cpp implements for each BPE pre-tokenizer, as they appear in tokenizer.json.
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen3.5 keeps combining marks with letters
_QWEN35 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# o200k (GPT-4o), as Phi-4-mini's tokenizer.json has it
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Some tokenizers spell the case-insensitive contractions out instead of using (?i:...).
_LLAMA3_SPELLED = _LLAMA3.replace(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)", r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
)
_QWEN35_SPELLED = _QWEN35.replace(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)", r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
)
_QWEN2_SPELLED = _QWEN2.replace(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)", r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
)

PRE_TOKENIZER_PATTERNS: dict[tuple[str, ...], str] = {
    (_LLAMA3,): "llama-bpe",
    (_LLAMA3_SPELLED,): "llama-bpe",
    (_QWEN2,): "qwen2",
    (_QWEN2_SPELLED,): "qwen2",
    (_QWEN35,): "qwen35",
    (_QWEN35_SPELLED,): "qwen35",
    (_GPT2,): "gpt-2",
    (_GPT4O,): "gpt-4o",
}


def _patterns(pre: dict | None) -> list[str]:
    """The split regexes a tokenizers pre-tokenizer applies, in order."""
    if not pre:
        return []
    kind = pre.get("type")
    if kind == "Sequence":
        out: list[str] = []
        for p in pre.get("pretokenizers", []):
            out += _patterns(p)
        return out
    if kind == "Split":
        pat = pre.get("pattern", {})
        return [pat.get("Regex") or pat.get("String") or ""]
    if kind == "ByteLevel":
        return [_GPT2] if pre.get("use_regex", True) else []
    if kind == "Digits":
        return ["<digits individual>" if pre.get("individual_digits") else "<digits>"]
    return [f"<{kind}>"]


def detect_bpe_pre(tokenizer_json: dict, source: Path) -> str:
    pats = tuple(_patterns(tokenizer_json.get("pre_tokenizer")))
    name = PRE_TOKENIZER_PATTERNS.get(pats)
    if name is None:
        shown = " + ".join(p[:60] for p in pats) or "none"
        raise NibbleError(
            f"{source}: its BPE pre-tokenizer ({shown}) is not one llama.cpp implements; "
            "supported: Llama-3, Qwen2, Qwen3.5, GPT-2 and GPT-4o style patterns"
        )
    return name


def _added_tokens(tj: dict | None, tokenizer_config: dict) -> dict[int, dict]:
    added: dict[int, dict] = {}
    for t in (tj or {}).get("added_tokens", []):
        added[int(t["id"])] = {"content": t["content"], "special": bool(t.get("special"))}
    for k, v in (tokenizer_config.get("added_tokens_decoder") or {}).items():
        added[int(k)] = {"content": v["content"], "special": bool(v.get("special"))}
    return added


def _tokens_by_id(vocab: dict[str, int], added: dict[int, dict]) -> dict[int, str]:
    """id -> token text from a tokenizer.json vocabulary, with the added tokens over it."""
    reverse = {i: t for t, i in vocab.items()}
    for i, t in added.items():
        reverse[i] = t["content"]
    return reverse


def _write_llama_vocab(writer: gguf.GGUFWriter, tokens: list[str], scores: list[float], types: list) -> None:
    """The fields of a SentencePiece ("llama") vocabulary."""
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)


def write_vocab(writer: gguf.GGUFWriter, model_dir: Path, kind: str, vocab_size: int | None,
                pre_names: dict[str, str] | None = None, special_tokens: dict[str, str] | None = None) -> int:
    """Add tokenizer.ggml.* fields; returns the vocabulary size written.

    ``pre_names`` renames a detected BPE pre-tokenizer where the family's converter names it otherwise
    (GLM-4's Llama-3 pattern is llama.cpp's ``glm4``); ``special_tokens`` (kind -> token text) fill in
    special token ids the tokenizer files leave unset, as the family's converter does.
    """
    # gguf's SpecialVocab logs notes about post-processor templates it does not model; they say nothing
    # a user can act on, and the fields Nibble needs are checked by its tests.
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)
    tc_path = model_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}
    tj_path = model_dir / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8")) if tj_path.is_file() else None
    added = _added_tokens(tj, tokenizer_config)
    T = gguf.TokenType
    if kind == "bpe":
        assert tj is not None
        if tj["model"].get("type") != "BPE":
            raise NibbleError(f"{tj_path}: tokenizer model {tj['model'].get('type')} is not supported; Nibble converts BPE and SentencePiece tokenizers")
        reverse = _tokens_by_id(tj["model"]["vocab"], added)
        n = max(vocab_size or 0, max(reverse) + 1)
        tokens, types = [], []
        for i in range(n):
            if i not in reverse:
                tokens.append(f"[PAD{i}]")
                types.append(T.UNUSED)
            elif i in added:
                tokens.append(reverse[i])
                types.append(T.CONTROL if added[i]["special"] else T.USER_DEFINED)
            else:
                tokens.append(reverse[i])
                types.append(T.NORMAL)
        writer.add_tokenizer_model("gpt2")
        pre = detect_bpe_pre(tj, tj_path)
        writer.add_tokenizer_pre((pre_names or {}).get(pre, pre))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n)
        if not special.merges:
            raise NibbleError(f"{tj_path}: a BPE tokenizer without merges cannot be converted; download tokenizer.json again")
    elif kind == "sentencepiece":
        sp_path = model_dir / "tokenizer.model"
        if not sp_path.is_file():
            raise NibbleError(f"{model_dir}: SentencePiece tokenizer.model is missing; download it with the model")
        from sentencepiece import SentencePieceProcessor

        sp = SentencePieceProcessor()
        try:
            sp.LoadFromFile(str(sp_path))
        except (OSError, RuntimeError) as exc:
            raise NibbleError(f"{sp_path} is not a valid SentencePiece model; download it again") from exc
        n_sp = sp.vocab_size()
        n = max(vocab_size or 0, n_sp, (max(added) + 1) if added else 0)
        tokens = [f"[PAD{i}]" for i in range(n)]
        scores = [-1000.0] * n
        types = [T.UNUSED] * n
        for i in range(n_sp):
            tokens[i] = sp.IdToPiece(i)
            scores[i] = sp.GetScore(i)
            if sp.IsUnknown(i):
                types[i] = T.UNKNOWN
            elif sp.IsControl(i):
                types[i] = T.CONTROL
            elif sp.IsUnused(i):
                types[i] = T.UNUSED
            elif sp.IsByte(i):
                types[i] = T.BYTE
            else:
                types[i] = T.NORMAL
        for i, t in added.items():
            if i >= n:
                continue
            if i < n_sp and tokens[i] == t["content"] and types[i] != T.NORMAL:
                continue  # the model's own control/byte/unknown piece
            tokens[i] = t["content"]
            scores[i] = -1000.0 if i >= n_sp else scores[i]
            types[i] = T.CONTROL if t["special"] else T.USER_DEFINED
        _write_llama_vocab(writer, tokens, scores, types)
        special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=n)
    elif kind == "sentencepiece-json":
        # A SentencePiece BPE model kept only as tokenizer.json: a piece's score is minus the rank of
        # the merge that makes it, which orders llama.cpp's merges exactly as the merge list does.
        assert tj is not None
        model = tj["model"]
        reverse = _tokens_by_id(model["vocab"], added)
        n = max(vocab_size or 0, max(reverse) + 1)
        rank: dict[str, int] = {}
        for r, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            rank.setdefault(a + b, r)
        unk = model.get("unk_token")
        tokens, scores, types = [], [], []
        for i in range(n):
            tok = reverse.get(i)
            if tok is None:
                tokens.append(f"[PAD{i}]"), scores.append(-1000.0), types.append(T.UNUSED)
                continue
            tokens.append(tok)
            scores.append(-float(rank[tok]) if tok in rank else 0.0)
            if i in added:
                types.append(T.CONTROL if added[i]["special"] else T.USER_DEFINED)
            elif tok == unk:
                types.append(T.UNKNOWN)
            elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
                types.append(T.BYTE)
            else:
                types.append(T.NORMAL)
        _write_llama_vocab(writer, tokens, scores, types)
        special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=n)
    else:
        raise NibbleError(
            f"{model_dir}: no usable tokenizer (found {kind}); a model needs tokenizer.json (BPE) or tokenizer.model (SentencePiece)"
        )
    if vocab_size and n > vocab_size:
        raise NibbleError(
            f"{model_dir}: the tokenizer has {n} tokens but config.json's vocab_size is {vocab_size}; "
            "the tokenizer files do not belong to these weights"
        )
    for typ, text in (special_tokens or {}).items():
        ids = [i for i, t in added.items() if t["content"] == text]
        if not ids:
            raise NibbleError(f"{model_dir}: the tokenizer lacks the {text} token this model family marks as {typ}; "
                              "the tokenizer files do not belong to this model")
        special._set_special_token(typ, ids[0])  # as the family's converter: ids the files set stay
    special.add_to_gguf(writer, quiet=True)
    return n
