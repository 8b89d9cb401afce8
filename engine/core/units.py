"""Units as people read them: the one byte formatter (binary units, as llama.cpp prints them), counts of
parameters, and plain-text tables. The CLI and the app both format through here."""

from __future__ import annotations

import re

from engine.core.errors import SETTINGS, NibbleError


def human_bytes(n: float | None, missing: str = "—") -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal; ``missing`` for an unknown size."""
    if n is None:
        return missing
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def format_kld(x: float | None, missing: str = "—") -> str:
    """A KL divergence as people can read it: ``0.0123`` with four decimals, ``3.2e-05`` in scientific
    notation below 0.001 (four decimals would print it as 0.0000, hiding a small but real divergence),
    ``0`` for exactly none."""
    if x is None:
        return missing
    x = float(x)
    if x == 0:
        return "0"
    return f"{x:.4f}" if abs(x) >= 1e-3 else f"{x:.2e}"


def parse_count(text: str) -> int:
    """'7B', '500M', '1.5b', '3000000' -> a number of parameters."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmbt]?)\s*", text, re.I)
    if not m:
        raise NibbleError(f"'{text}' is not a parameter count: write e.g. 8B, 500M or 1.5B")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}[m.group(2).lower()])


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str, setting: str = "size") -> int:
    """'50GB', '3900MiB', '4.2 GB', '123456' -> bytes (GB = 10^9, GiB = 2^30, as the Hub and llama.cpp write them)."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-z]*)\s*", str(text), re.I)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS or m.group(1).count(".") > 1:
        raise NibbleError(f"{setting} '{text}' is not a size: write e.g. 50GB, 3900MiB or a number of bytes",
                          setting=setting if setting in SETTINGS else None)
    return int(float(m.group(1)) * _SIZE_UNITS[unit])
