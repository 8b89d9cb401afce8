"""Write llama-family GGUF files of any shape for estimate tests and benchmarks.

``dense`` files hold random F16/F32 data and load in llama.cpp; ``sparse`` files have a correct header and a
data region that is a hole in the file, so llama.cpp's quantizer can dry-run a 70B model without disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np


def llama_tensors(n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int, n_vocab: int,
                  tied: bool = False, head_dim: int | None = None, n_expert: int = 0,
                  dtype: str = "F16") -> list[tuple[str, tuple[int, ...], str]]:
    """(GGUF name, ne, type) for a Llama-style decoder, in GGUF order (ne[0] = row length)."""
    hd = head_dim or n_embd // n_head
    out = [("token_embd.weight", (n_embd, n_vocab), dtype), ("output_norm.weight", (n_embd,), "F32")]
    if not tied:
        out.append(("output.weight", (n_embd, n_vocab), dtype))
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (n_embd,), "F32"), (b + "ffn_norm.weight", (n_embd,), "F32"),
                (b + "attn_q.weight", (n_embd, n_head * hd), dtype),
                (b + "attn_k.weight", (n_embd, n_head_kv * hd), dtype),
                (b + "attn_v.weight", (n_embd, n_head_kv * hd), dtype),
                (b + "attn_output.weight", (n_head * hd, n_embd), dtype)]
        if n_expert:
            out += [(b + "ffn_gate_inp.weight", (n_embd, n_expert), "F32"),
                    (b + "ffn_gate_exps.weight", (n_embd, n_ff, n_expert), dtype),
                    (b + "ffn_up_exps.weight", (n_embd, n_ff, n_expert), dtype),
                    (b + "ffn_down_exps.weight", (n_ff, n_embd, n_expert), dtype)]
        else:
            out += [(b + "ffn_gate.weight", (n_embd, n_ff), dtype), (b + "ffn_up.weight", (n_embd, n_ff), dtype),
                    (b + "ffn_down.weight", (n_ff, n_embd), dtype)]
    return out


def write_llama_gguf(path: Path, *, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int,
                     n_vocab: int, n_ctx_train: int = 4096, tied: bool = False, head_dim: int | None = None,
                     n_expert: int = 0, n_expert_used: int = 0, dtype: str = "F16", sparse: bool = False,
                     vocab_from: Path | None = None, seed: int = 0) -> Path:
    """Write a llama-architecture GGUF. ``vocab_from`` copies the tokenizer keys of another GGUF."""
    hd = head_dim or n_embd // n_head
    tensors = llama_tensors(n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, tied, hd, n_expert, dtype)
    w = gguf.GGUFWriter(os.fspath(path), "llama")
    w.add_name("synthetic")
    w.add_block_count(n_layer)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "F16" else gguf.LlamaFileType.ALL_F32)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used or 2)
    if vocab_from is not None:
        _copy_tokenizer(w, vocab_from, n_vocab)
    else:
        _byte_vocab(w, n_vocab)
    rng = np.random.default_rng(seed)
    if sparse:
        for name, ne, t in tensors:
            qt = gguf.GGMLQuantizationType[t]
            nbytes = int(np.prod(ne)) * gguf.GGML_QUANT_SIZES[qt][1]
            w.add_tensor_info(name, tuple(reversed(ne)), np.float16 if t == "F16" else np.float32, nbytes,
                              raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        pos = path.stat().st_size
        end = _pad(pos) + sum(_pad(int(np.prod(ne)) * gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]][1])
                              for _, ne, t in tensors)
        os.truncate(path, end)
        return path
    for name, ne, t in tensors:
        shape = tuple(reversed(ne))
        if name.endswith("norm.weight"):
            arr = np.ones(shape, dtype=np.float32)
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
            if t == "F16":
                arr = arr.astype(np.float16)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _pad(n: int, align: int = 32) -> int:
    return (n + align - 1) // align * align


def _byte_vocab(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """A small SentencePiece-style vocabulary: specials, the 256 byte tokens, then filler pieces."""
    assert n_vocab >= 259 + 1
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def _copy_tokenizer(w: gguf.GGUFWriter, src: Path, n_vocab: int) -> None:
    r = gguf.GGUFReader(src)
    for key, field in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
                value = value[:n_vocab]
            w.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, value, vtype)
