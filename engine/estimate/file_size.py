"""Exact size of the GGUF file the quantizer writes for a plan and a file type.

A GGUF file is a fixed header, the key/value section, one info record per tensor, padding to the 32-byte
alignment, then each tensor's data padded to 32 bytes. Tensor data sizes follow from the chosen types;
the key/value section is copied from the input (with the file type key set).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.estimate.plan import ModelPlan
from engine.estimate.tensor_types import FT, QT, choose_types, tensor_bytes

ALIGN = 32
_FIXED_HEADER = 4 + 4 + 8 + 8  # magic, version, tensor count, key/value count


def pad(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


@dataclass(frozen=True)
class FileLayout:
    """The quantized file: its size, what is in it, and the type of each tensor.

    ``types`` lists ``(tensor name, ggml type name)`` in file order; ``type_counts`` maps a ggml type
    name to (number of tensors, bytes); ``header_bytes`` includes the key/value section and tensor infos.
    """

    file_bytes: int
    tensor_bytes: int
    header_bytes: int
    n_params: int
    types: tuple[tuple[str, str], ...]
    type_counts: dict[str, tuple[int, int]]
    sizes: tuple[int, ...] = ()

    @property
    def bits_per_weight(self) -> float:
        """Tensor bytes * 8 / parameters, as llama.cpp reports it (the header is not counted)."""
        return self.tensor_bytes * 8 / self.n_params if self.n_params else 0.0


def _header_bytes(plan: ModelPlan) -> int:
    cached = plan._cache.get("header")
    if cached is None:
        infos = sum(8 + len(t.name.encode()) + 4 + 8 * t.n_dims + 4 + 8 for t in plan.tensors)
        kv = plan.metadata_bytes
        cached = plan._cache["header"] = pad(_FIXED_HEADER + kv + infos)
    return cached


def layout(plan: ModelPlan, ft: FT) -> FileLayout:
    """The quantized file for ``plan`` at file type ``ft`` (cached on the plan: types do not change)."""
    key = ("layout", ft)
    hit = plan._cache.get(key)
    if hit is not None:
        return hit
    result = layout_for_types(plan, choose_types(plan, ft))
    plan._cache[key] = result
    return result


def layout_for_types(plan: ModelPlan, types: list[QT]) -> FileLayout:
    """The file with ``types[i]`` for ``plan.tensors[i]``: a uniform type's mixture or a chosen mix."""
    total = 0
    counts: Counter = Counter()
    nbytes: Counter = Counter()
    sizes = []
    for t, qt in zip(plan.tensors, types):
        b = tensor_bytes(qt, t.ne)
        sizes.append(b)
        total += pad(b)
        counts[qt.name] += 1
        nbytes[qt.name] += b
    header = _header_bytes(plan)
    return FileLayout(
        file_bytes=header + total,
        tensor_bytes=sum(nbytes.values()),
        header_bytes=header,
        n_params=plan.n_params,
        types=tuple((t.name, qt.name) for t, qt in zip(plan.tensors, types)),
        type_counts={k: (counts[k], nbytes[k]) for k in sorted(counts, key=lambda k: -nbytes[k])},
        sizes=tuple(sizes),
    )


def source_gguf_bytes(plan: ModelPlan) -> int:
    """Size of the intermediate GGUF the converter writes (each tensor in its ``src_type``)."""
    hit = plan._cache.get("intermediate")
    if hit is None:
        hit = _header_bytes(plan) + sum(pad(tensor_bytes(QT[t.src_type], t.ne)) for t in plan.tensors)
        plan._cache["intermediate"] = hit
    return hit
