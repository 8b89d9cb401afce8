"""Splitting a GGUF file into parts in llama.cpp's split format (``NAME-00001-of-00003.gguf``).

The first part carries every metadata key; each part carries ``split.no``, ``split.count`` and
``split.tensors.count``, as ``llama-gguf-split`` writes them, so llama.cpp (and Ollama, LM Studio) load the
whole model from the first part. The Hugging Face Hub advises files under 50 GB.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np

from engine.core.errors import NibbleError
from engine.core.progress import Reporter
from engine.models.inspect import open_gguf

#: Keys the writer computes itself; copying them would duplicate them.
_COMPUTED = ("GGUF.", "split.")


def part_names(path: Path, count: int) -> list[Path]:
    """The names llama.cpp expects for ``count`` parts of ``path``."""
    if count <= 1:
        return [path]
    return [path.with_name(gguf.gguf_writer.SHARD_NAME_FORMAT.format(path.stem, i + 1, count)) for i in range(count)]


def _field_value(field: gguf.ReaderField):
    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        return field.contents(), vtype, field.types[-1]
    return field.contents(), vtype, None


def split_gguf(path: str | os.PathLike, max_bytes: int, out_dir: str | os.PathLike,
               reporter: Reporter | None = None) -> list[Path]:
    """Write ``path`` as parts of at most ``max_bytes`` of tensor data each into ``out_dir``; returns the
    parts, first to last. A file that fits is not copied: ``[path]`` is returned."""
    reporter = reporter or Reporter()
    path = Path(path)
    if max_bytes <= 0:
        raise NibbleError(f"split size {max_bytes} must be a positive number of bytes, e.g. 50GB")
    if path.stat().st_size <= max_bytes:
        return [path]
    reader = open_gguf(path)
    if any(f.name.startswith("split.") for f in reader.fields.values()):
        raise NibbleError(f"{path} is already one part of a split model; publish its parts as they are")
    largest = max((int(t.n_bytes) for t in reader.tensors), default=0)
    if largest > max_bytes:
        raise NibbleError(f"{path}: its largest tensor is {largest:,} bytes, more than the split size "
                          f"{max_bytes:,}; choose a larger split size")
    arch = str(reader.fields["general.architecture"].contents())
    out = Path(out_dir) / path.name
    writer = gguf.GGUFWriter(out, arch, split_max_size=max_bytes)
    try:
        for field in reader.fields.values():
            if field.name.startswith(_COMPUTED) or field.name == "general.architecture":
                continue
            value, vtype, sub = _field_value(field)
            writer.add_key_value(field.name, value, vtype, sub_type=sub)
        for t in reader.tensors:
            data = t.data
            if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                writer.add_tensor(t.name, np.asarray(data), raw_dtype=t.tensor_type)
            else:
                writer.add_tensor(t.name, np.asarray(data).view(np.uint8), raw_shape=data.shape,
                                  raw_dtype=t.tensor_type)
        parts = part_names(out, len(writer.tensors))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, t in enumerate(reader.tensors):
            reporter.check_cancel()
            writer.write_tensor_data(np.asarray(t.data))
            reporter.progress(i + 1, len(reader.tensors), f"splitting {path.name}")
        writer.close()
    except BaseException:
        writer.close()
        for p in part_names(out, len(writer.tensors)):
            p.unlink(missing_ok=True)
        raise
    return parts
