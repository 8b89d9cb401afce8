"""The GGUF tensors of a model: what each is made of, how it is transformed, how it is stored.

A :class:`PlannedTensor` is data, not code: its source tensors (several when experts are stacked), the
transforms applied on the way (q/k row permutation, a norm's offset, rows kept) or the values of a tensor
Nibble computes (rope factors). :func:`materialise` turns one into an array; the converter writes it, the
statistics view compares it with the quantized file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import gguf
import numpy as np

from engine.core.errors import NibbleError


def shape_mismatch_error(where, name: str, stored, want) -> NibbleError:
    """The one message for a tensor whose stored shape is not the one config.json makes it (an edited or swapped
    config): every reader of weights says it alike."""
    return NibbleError(f"{where}: tensor {name} has shape {list(stored)} but config.json makes it {list(want)}; the "
                       "weights and config.json do not belong together, download the model again")


F32 = gguf.GGMLQuantizationType.F32

# Intermediate storage type for 2-D weights, by safetensors dtype: kept as stored, so nothing is lost.
STORED_TYPE = {
    "BF16": gguf.GGMLQuantizationType.BF16,
    "F16": gguf.GGMLQuantizationType.F16,
    "F32": gguf.GGMLQuantizationType.F32,
    "F64": gguf.GGMLQuantizationType.F32,
}

# Tensors llama.cpp's converter always stores as F32, besides 1-D tensors and norms.
ALWAYS_F32 = (
    gguf.MODEL_TENSOR.FFN_GATE_INP,
    gguf.MODEL_TENSOR.FFN_GATE_INP_SHEXP,
    gguf.MODEL_TENSOR.POS_EMBD,
    gguf.MODEL_TENSOR.TOKEN_TYPES,
    gguf.MODEL_TENSOR.SSM_CONV1D,
)
_ALWAYS_F32_STEMS = {gguf.TENSOR_NAMES[k].replace("blk.{bid}.", "") for k in ALWAYS_F32}


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the GGUF to write.

    ``shape`` is the numpy (row-major) shape after the transforms; ``ops`` are ``(name, argument)`` pairs:
    ``("permute", n_head)``, ``("add", value)``, ``("rows", n)``, ``("neg_exp", 0)`` (-exp of each value),
    ``("squeeze", 0)`` (drop axes of length 1), ``("slice", (axis, start, stop))``, ``("transpose", 0)`` (the
    last two axes swapped),
    ``("pick", (groups, widths, parts))``: rows as ``groups`` blocks of parts ``widths`` wide, the ``parts`` named
    kept part by part (``[q, k, v, z] * heads`` → ``[q * heads, k * heads]``), and
    ``("regroup", (axis, start, groups, per_group, size))``: from index ``start`` on along ``axis``, heads
    grouped as ``groups`` x ``per_group`` of ``size`` are reordered to ``per_group`` x ``groups`` (the tiled
    order llama.cpp broadcasts shared heads in).
    ``values`` holds a computed tensor.
    """

    gguf_name: str
    sources: tuple[str, ...]
    shape: tuple[int, ...]
    ggml_type: gguf.GGMLQuantizationType
    ops: tuple[tuple[str, object], ...] = ()
    values: tuple[float, ...] | None = None

    @property
    def hf_name(self) -> str | None:
        """The one source tensor, or None for stacked and computed tensors."""
        return self.sources[0] if len(self.sources) == 1 else None

    @property
    def source_label(self) -> str:
        if not self.sources:
            return "(computed)"
        if len(self.sources) == 1:
            return self.sources[0]
        return re.sub(r"\.\d+\.", ".*.", self.sources[0], count=1) + f" ({len(self.sources)} stacked)"

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape)) if self.shape else 1
        return n * (4 if self.ggml_type == F32 else 2)


def intermediate_type(gguf_name: str, n_dims: int, dtype: str) -> gguf.GGMLQuantizationType:
    """The type the converter gives a tensor: F32 for 1-D, norms, routers and the like; else as stored."""
    if n_dims <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return F32
    stem = re.sub(r"^blk\.\d+\.", "", gguf_name.rsplit(".", 1)[0])
    if stem in _ALWAYS_F32_STEMS:
        return F32
    return STORED_TYPE.get(dtype, gguf.GGMLQuantizationType.F16)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k layout → llama.cpp's interleaved rope layout (llama-architecture models)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def regroup(w: np.ndarray, axis: int, start: int, groups: int, per_group: int, size: int) -> np.ndarray:
    """Heads ``[g0h0 .. g0hN, g1h0 ..]`` from ``start`` on along ``axis`` → ``[g0h0, g1h0, .., g0h1, g1h1, ..]``."""
    w = np.moveaxis(w, axis, 0)
    head, tail = w[:start], w[start:]
    tail = tail.reshape(groups, per_group, size, *tail.shape[1:]).swapaxes(0, 1).reshape(tail.shape)
    return np.moveaxis(np.concatenate([head, tail]) if start else tail, 0, axis)


def shape_after(shape: tuple[int, ...], ops) -> tuple[int, ...]:
    """A tensor's shape once ``ops`` are applied (``rows`` is planned by its family)."""
    shape = tuple(shape)
    for op, arg in ops:
        if op == "squeeze":
            shape = tuple(d for d in shape if d != 1)
        elif op == "slice":
            axis, start, stop = (int(a) for a in arg)
            shape = (*shape[:axis], stop - start, *shape[axis + 1:])
        elif op == "pick":
            groups, widths, parts = arg
            shape = (groups * sum(widths[i] for i in parts), *shape[1:])
        elif op == "transpose":
            shape = (*shape[:-2], shape[-1], shape[-2])
    return shape


def pick(w: np.ndarray, groups: int, widths: tuple[int, ...], parts: tuple[int, ...]) -> np.ndarray:
    """Rows ``[p0, p1, ..] * groups`` (part i ``widths[i]`` rows) → ``[parts[0] * groups, parts[1] * groups, ..]``."""
    blocks = w.reshape(groups, sum(widths), *w.shape[1:])
    offsets = np.cumsum((0, *widths))
    return np.concatenate([blocks[:, offsets[i]:offsets[i + 1]].reshape(-1, *w.shape[1:]) for i in parts])


def materialise(t: PlannedTensor, read: Callable[[str], np.ndarray]) -> np.ndarray:
    """The tensor's data: its sources read with ``read`` (stacked if several), then its transforms."""
    if t.values is not None:
        return np.asarray(t.values, dtype=np.float32).reshape(t.shape)
    parts = [read(n) for n in t.sources]
    data = parts[0] if len(parts) == 1 else np.stack(parts)
    del parts
    for op, arg in t.ops:
        if op == "permute":
            data = permute_qk(data, int(arg))
        elif op == "add":
            data = data.astype(np.float32) + np.float32(arg)
        elif op == "rows":
            data = data[: int(arg)]
        elif op == "neg_exp":
            import torch  # llama.cpp's converter computes it with torch; numpy's exp rounds differently

            data = (-torch.exp(torch.from_numpy(data.astype(np.float32)))).numpy()
        elif op == "squeeze":
            data = data.squeeze()
        elif op == "slice":
            axis, start, stop = (int(a) for a in arg)
            data = data[(slice(None),) * axis + (slice(start, stop),)]
        elif op == "regroup":
            data = regroup(data, *(int(a) for a in arg))
        elif op == "pick":
            data = pick(data, *arg)
        elif op == "transpose":
            data = data.swapaxes(-1, -2)
        else:  # pragma: no cover - a family module names an op this function lacks
            raise ValueError(f"unknown tensor op {op!r}")
    return np.ascontiguousarray(data)


def sort_key(t: PlannedTensor):
    """llama.cpp's converter order: rope tensors, embeddings, blocks in order, output norm, output."""
    parts = t.gguf_name.split(".")
    if parts[0] == "blk":
        return (2, int(parts[1]), t.gguf_name)
    order = {"token_embd": 1, "output_norm": 3, "output": 4}
    return (order.get(parts[0], 0), 0, t.gguf_name)
