"""What a file is, as far as GGUF goes: whether it is one, and what it holds (a model, an importance matrix).
Outputs use it to refuse replacing a file of another kind."""

from __future__ import annotations

from pathlib import Path

MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    try:
        if not Path(path).is_file():
            return False
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def gguf_type(path: Path) -> str | None:
    """What a GGUF file holds ("model", "imatrix", ...) from its ``general.type``; None if it is no GGUF."""
    if not is_gguf(path):
        return None
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).get_field("general.type")
    except Exception:  # a damaged header: not a file Nibble wrote
        return None
    if field is None:
        return "model"
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
