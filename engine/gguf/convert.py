"""Hugging Face folder → GGUF, written with the ``gguf`` package the way llama.cpp's converter writes it.

Tensor names, metadata keys and tokenizer fields match llama.cpp's ``convert_hf_to_gguf.py`` so the files
load in every llama.cpp-based tool. Tensors are streamed one at a time (memory bounded by the largest).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from engine.core.errors import NibbleError
from engine.core.outputs import check_free_space, check_output, temp_path, write_error
from engine.gguf.files import is_gguf
from engine.gguf.vocab import write_vocab
from engine.core.progress import Reporter
from engine.models.source import SourceModel, check_finite, open_source

GGUF_ARCH = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
}

# Intermediate storage type for 2-D weights, by source dtype: kept as stored, so nothing is lost.
_DTYPE_TO_GGML = {
    "BF16": gguf.GGMLQuantizationType.BF16,
    "F16": gguf.GGMLQuantizationType.F16,
    "F32": gguf.GGMLQuantizationType.F32,
    "F64": gguf.GGMLQuantizationType.F32,
}
_FILE_TYPE = {
    gguf.GGMLQuantizationType.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
    gguf.GGMLQuantizationType.F32: gguf.LlamaFileType.ALL_F32,
}


@dataclass(frozen=True)
class Hparams:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    n_vocab: int
    rope_theta: float
    rms_eps: float
    tie_embeddings: bool

    @classmethod
    def from_config(cls, cfg: dict) -> "Hparams":
        try:
            n_head = int(cfg["num_attention_heads"])
            n_embd = int(cfg["hidden_size"])
            return cls(
                n_layer=int(cfg["num_hidden_layers"]),
                n_embd=n_embd,
                n_ff=int(cfg["intermediate_size"]),
                n_head=n_head,
                n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
                head_dim=int(cfg.get("head_dim") or n_embd // n_head),
                n_ctx_train=int(cfg.get("max_position_embeddings", 2048)),
                n_vocab=int(cfg.get("vocab_size", 0)),
                rope_theta=float(_rope_params(cfg).get("rope_theta", cfg.get("rope_theta", 10000.0))),
                rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            )
        except KeyError as exc:
            raise NibbleError(f"config.json lacks {exc.args[0]}; this does not look like a complete model config") from exc


def _rope_params(cfg: dict) -> dict:
    """rope_scaling (transformers 4) or rope_parameters (transformers 5), whichever the config has."""
    return dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k layout → llama.cpp's interleaved rope layout (llama-architecture models)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk`: a GGUF llama q/k weight back to HF's layout."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg: dict, hp: Hparams) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3.1-style rope scaling (the ``rope_freqs.weight`` tensor)."""
    rp = _rope_params(cfg)
    if rp.get("rope_type", rp.get("type")) != "llama3":
        return None
    factor = float(rp.get("factor", 8.0))
    low = float(rp.get("low_freq_factor", 1.0))
    high = float(rp.get("high_freq_factor", 4.0))
    old_ctx = float(rp.get("original_max_position_embeddings", 8192))
    # float32, as transformers computes its inverse frequencies
    freqs = (1.0 / (np.float32(hp.rope_theta) ** (np.arange(0, hp.head_dim, 2, dtype=np.float32) / np.float32(hp.head_dim)))).astype(np.float32)
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


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the GGUF to write: where it comes from and how it is stored."""

    gguf_name: str
    hf_name: str | None  # None for tensors Nibble computes (rope_freqs)
    shape: tuple[int, ...]  # numpy (row-major) shape
    ggml_type: gguf.GGMLQuantizationType
    permute_heads: int = 0  # >0: apply permute_qk with this many heads

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape)) if self.shape else 1
        return n * (4 if self.ggml_type == gguf.GGMLQuantizationType.F32 else 2)


def plan_tensors(src: SourceModel) -> list[PlannedTensor]:
    """The GGUF tensors for a source model: names mapped with gguf's TensorNameMap, llama.cpp's order of types."""
    arch_name = src.gguf_architecture
    arch = GGUF_ARCH[arch_name]
    hp = Hparams.from_config(src.config)
    name_map = gguf.get_tensor_name_map(arch, hp.n_layer)
    planned: list[PlannedTensor] = []
    skipped = ("rotary_emb.inv_freq",)
    for hf_name, info in src.tensors.items():
        if hf_name.endswith(skipped):
            continue
        if hf_name == "lm_head.weight" and hp.tie_embeddings and "model.embed_tokens.weight" in src.tensors:
            continue  # tied: llama.cpp reuses token_embd
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise NibbleError(f"{info.file.name}: tensor {hf_name} has no GGUF counterpart for {src.hf_architecture}")
        if len(info.shape) <= 1 or new_name.endswith("_norm.weight"):
            ggml_type = gguf.GGMLQuantizationType.F32
        else:
            ggml_type = _DTYPE_TO_GGML[info.dtype]
        heads = 0
        if arch_name == "llama":
            if new_name.startswith("blk.") and ".attn_q." in new_name:
                heads = hp.n_head
            elif new_name.startswith("blk.") and ".attn_k." in new_name:
                heads = hp.n_head_kv
        planned.append(PlannedTensor(new_name, hf_name, tuple(info.shape), ggml_type, heads))
    factors = llama3_rope_factors(src.config, hp)
    if factors is not None:
        planned.append(PlannedTensor("rope_freqs.weight", None, factors.shape, gguf.GGMLQuantizationType.F32))
    order = {"token_embd": 0, "blk": 1, "output_norm": 2, "output": 3}

    def key(t: PlannedTensor):
        parts = t.gguf_name.split(".")
        if parts[0] == "blk":
            return (1, int(parts[1]), t.gguf_name)
        return (order.get(parts[0], -1 if parts[0] == "rope_freqs" else 4), 0, t.gguf_name)

    return sorted(planned, key=key)


def _intermediate_file_type(planned: list[PlannedTensor]) -> gguf.LlamaFileType:
    types = {t.ggml_type for t in planned if len(t.shape) > 1}
    for t in (gguf.GGMLQuantizationType.BF16, gguf.GGMLQuantizationType.F16):
        if t in types:
            return _FILE_TYPE[t]
    return gguf.LlamaFileType.ALL_F32


def write_metadata(writer: gguf.GGUFWriter, src: SourceModel, planned: list[PlannedTensor]) -> None:
    cfg = src.config
    hp = Hparams.from_config(cfg)
    arch = src.gguf_architecture
    name = cfg.get("_name_or_path") or src.path.name
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(str(name)).name or "model")
    writer.add_block_count(hp.n_layer)
    writer.add_context_length(hp.n_ctx_train)
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    writer.add_file_type(_intermediate_file_type(planned))
    if arch == "llama":
        writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.n_embd // hp.n_head or arch == "qwen3" or "head_dim" in cfg:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    rp = _rope_params(cfg)
    rope_type = rp.get("rope_type", rp.get("type"))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rp["factor"]))
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rp["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rp.get("original_max_position_embeddings", hp.n_ctx_train)))
    n_vocab = write_vocab(writer, src.path, src.tokenizer_kind, hp.n_vocab or None)
    if arch == "llama":
        writer.add_vocab_size(n_vocab)


def _tensor_data(src: SourceModel, t: PlannedTensor) -> np.ndarray:
    if t.hf_name is None:
        factors = llama3_rope_factors(src.config, Hparams.from_config(src.config))
        assert factors is not None
        return factors
    info = src.tensors[t.hf_name]
    if t.ggml_type == gguf.GGMLQuantizationType.F32:
        data = src.read_f32(t.hf_name)
    elif info.dtype == "F64":
        data = src.read_f32(t.hf_name)
    else:
        data = src.read_raw(t.hf_name)  # BF16 words or F16, unchanged
    check_finite(data, info.dtype, info.file, t.hf_name)
    if t.permute_heads:
        data = permute_qk(data, t.permute_heads)
    return np.ascontiguousarray(data)


def convert_to_gguf(
    source: str | Path | SourceModel,
    out_path: str | Path,
    *,
    reporter: Reporter | None = None,
) -> Path:
    """Write ``source`` as an unquantized GGUF (weights in their stored precision, norms in F32)."""
    reporter = reporter or Reporter()
    src = source if isinstance(source, SourceModel) else open_source(source)
    out = Path(out_path)
    planned = plan_tensors(src)
    check_output(out, inputs=[src.path], replaceable=is_gguf, kind="a GGUF file")
    check_free_space(out.parent, sum(t.nbytes for t in planned))
    tmp = temp_path(out, "convert")
    try:
        writer = gguf.GGUFWriter(tmp, src.gguf_architecture)
        write_metadata(writer, src, planned)
        for t in planned:
            raw_shape = t.shape
            nbytes = t.nbytes
            np_dtype = np.float32 if t.ggml_type == gguf.GGMLQuantizationType.F32 else (
                np.float16 if t.ggml_type == gguf.GGMLQuantizationType.F16 else np.uint16
            )
            raw = None if np_dtype is not np.uint16 else gguf.GGMLQuantizationType.BF16
            writer.add_tensor_info(t.gguf_name, raw_shape, np.dtype(np_dtype), nbytes, raw_dtype=raw)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = len(planned)
        for i, t in enumerate(planned, 1):
            reporter.check_cancel()
            writer.write_tensor_data(_tensor_data(src, t))
            reporter.progress(i, total, f"{t.gguf_name} -> {t.ggml_type.name}", stage="convert")
        writer.close()
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(exc, out) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
