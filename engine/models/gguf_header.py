"""A GGUF's metadata and where its tensor data ends, read without building gguf-py's per-value views.

``gguf.GGUFReader`` makes a numpy view for every part of every field, one for each token of the
vocabulary and each merge (40-70 ms of pure Python for a 1,000-token model, a second or more for a
128,000-token one), holding the interpreter all that time. Loading a model to chat with needs only a
few scalars and the end of the tensor data (to refuse a cut file before llama.cpp maps it): here arrays
are stepped over (strings by their lengths), and only scalar values are decoded.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import NibbleError

# GGUF value types: struct format of each fixed-size one; 8 is a string, 9 an array
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF's header says: scalar and string fields by key, each array field's length, and its
    tensors' count and where their data ends (the file must be at least that long)."""

    version: int
    fields: dict = field(default_factory=dict)  # key -> int, float, bool or str
    array_lengths: dict = field(default_factory=dict)  # key -> number of items
    tensor_count: int = 0
    data_end: int = 0  # byte offset just past the last tensor's data

    def get(self, key: str, default=None):
        return self.fields.get(key, default)


class _Cut(Exception):
    pass


def check_gguf_file(path: Path) -> None:
    """Refuse in one line a missing file or one that does not start with GGUF's magic."""
    if not path.is_file():
        raise NibbleError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise NibbleError(f"{path} is not a GGUF file (no GGUF magic); give a .gguf model or a model folder")


def corrupt_gguf(path: Path, exc: BaseException) -> NibbleError:
    """The one-line error for a GGUF whose header or layout cannot be read."""
    return NibbleError(f"{path} is truncated or corrupt ({type(exc).__name__}); download or convert it again")


def read_gguf_header(path: Path) -> GGUFHeader:
    """The header of the GGUF at ``path``, refusing in one line a file that is not a GGUF or whose header is
    cut short or unreadable (the tensor data itself is not read: compare ``data_end`` with the file's size)."""
    path = Path(path)
    check_gguf_file(path)
    with open(path, "rb") as f:
        try:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf)
        except (_Cut, struct.error, ValueError, OverflowError, KeyError, UnicodeDecodeError) as exc:
            raise corrupt_gguf(path, exc) from None


def _parse(buf) -> GGUFHeader:
    size = len(buf)
    (version,) = struct.unpack_from("<I", buf, 4)
    end = "<" if version & 0xFFFF else ">"  # a big-endian file's version reads as a large number here
    if end == ">":
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}")
    u32, u64 = struct.Struct(end + "I").unpack_from, struct.Struct(end + "Q").unpack_from
    n_tensors, n_kv = struct.unpack_from(end + "QQ", buf, 8)
    off = 24

    def string(at: int) -> tuple[str, int]:
        (n,) = u64(buf, at)
        if at + 8 + n > size:
            raise _Cut()
        return bytes(buf[at + 8:at + 8 + n]).decode("utf-8"), at + 8 + n

    fields, arrays = {}, {}
    for _ in range(n_kv):
        key, off = string(off)
        (vtype,) = u32(buf, off)
        off += 4
        if vtype == _STRING:
            fields[key], off = string(off)
        elif vtype == _ARRAY:
            (itype,) = u32(buf, off)
            (count,) = u64(buf, off + 4)
            off += 12
            arrays[key] = count
            if itype == _STRING:
                for _ in range(count):  # each item is its length and its bytes; only the lengths are read
                    off += 8 + u64(buf, off)[0]
            else:
                off += count * struct.calcsize(_SCALAR[itype])
            if off > size:
                raise _Cut()
        else:
            (fields[key],) = struct.unpack_from(end + _SCALAR[vtype], buf, off)
            off += struct.calcsize(_SCALAR[vtype])

    sizes = _type_sizes()
    last = 0
    for _ in range(n_tensors):
        _name, off = string(off)
        (n_dims,) = u32(buf, off)
        dims = struct.unpack_from(f"{end}{n_dims}Q", buf, off + 4)
        off += 4 + 8 * n_dims
        ttype, offset = struct.unpack_from(end + "IQ", buf, off)
        off += 12
        block, type_bytes = sizes[ttype]
        n = 1
        for d in dims:
            n *= d
        last = max(last, offset + n * type_bytes // block)
    align = int(fields.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    start = off + (-off % align)
    return GGUFHeader(version, fields, arrays, n_tensors, start + last if n_tensors else off)


def _type_sizes() -> dict[int, tuple[int, int]]:
    """Block size (elements) and its bytes for each ggml tensor type, as gguf-py lists them."""
    import gguf

    return {int(t): s for t, s in gguf.GGML_QUANT_SIZES.items()}
