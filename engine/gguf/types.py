"""GGUF quantization types: the ones the installed llama.cpp can write, and the one parser of their names.

Everything that takes a type name from a user (quantizing, the estimate, the app) goes through
:func:`parse_type`, so the same spellings are accepted everywhere: any case, surrounding spaces, and
llama-quantize's aliases (``Q4_K`` is ``Q4_K_M``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from engine.core.errors import NibbleError

# llama-quantize's short descriptions, for people choosing a type. The list of types itself is read
# from the installed library (see quant_types), so new types appear without a change here.
_DESCRIPTIONS = {
    "F32": "32-bit float, no loss", "F16": "16-bit float, practically lossless", "BF16": "bfloat16, as most models are trained",
    "Q8_0": "8-bit, nearly lossless", "Q6_K": "6.6 bits, very small loss", "Q5_K_M": "5.7 bits, small loss",
    "Q5_K_S": "5.5 bits, small loss", "Q5_1": "6 bits (legacy)", "Q5_0": "5.5 bits (legacy)",
    "Q4_K_M": "4.9 bits, the usual balance", "Q4_K_S": "4.6 bits", "Q4_1": "5 bits (legacy)", "Q4_0": "4.5 bits (legacy)",
    "IQ4_NL": "4.5 bits, non-linear", "IQ4_XS": "4.25 bits, non-linear", "Q3_K_L": "4.3 bits", "Q3_K_M": "3.9 bits",
    "Q3_K_S": "3.5 bits", "IQ3_M": "3.7 bits", "IQ3_S": "3.4 bits", "IQ3_XS": "3.3 bits", "IQ3_XXS": "3.1 bits",
    "Q2_K": "3.4 bits on small models, large loss", "Q2_K_S": "2.9 bits", "IQ2_M": "2.7 bits", "IQ2_S": "2.5 bits",
    "IQ2_XS": "2.3 bits", "IQ2_XXS": "2.1 bits", "IQ1_M": "1.75 bits, extreme loss", "IQ1_S": "1.56 bits, extreme loss",
    "TQ1_0": "1.69 bits ternary (for ternary-trained models)", "TQ2_0": "2.06 bits ternary (for ternary-trained models)",
}
# Types llama-quantize does not offer for ordinary models, or that name no real file type.
_HIDDEN = {"GUESSED", "MOSTLY_Q4_1_SOME_F16"}
# Aliases llama-quantize accepts.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def parse_type(name: str, choices: Iterable[str], also: str = "") -> str:
    """The canonical name of the type ``name`` stands for, which must be one of ``choices``.

    ``also`` names what else the caller accepts, for the error message (e.g. "AWQ").
    """
    key = str(name).strip().upper()
    key = ALIASES.get(key, key)
    choices = list(choices)
    if key in choices:
        return key
    listed = ", ".join(choices) + (f", or {also}" if also else "")
    raise NibbleError(f"quant type {str(name).strip()!r} is unknown; choose one of {listed}", setting="quant type")


@dataclass(frozen=True)
class QuantType:
    name: str
    ftype: int
    description: str
    needs_imatrix: bool  # without an importance matrix llama.cpp refuses (for most models)
    recommends_imatrix: bool  # quality improves markedly with one

    @property
    def is_float(self) -> bool:
        return self.name in ("F32", "F16", "BF16")


def _needs_imatrix(name: str) -> bool:
    return name.startswith(("IQ1_", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS")) or name == "Q2_K_S"


@lru_cache(maxsize=1)
def quant_types() -> tuple[QuantType, ...]:
    """Every file type the installed llama.cpp can quantize to, from llama_cpp's LLAMA_FTYPE_* constants."""
    from engine.core.llama import llama_facts

    facts = llama_facts()
    if not facts.get("ftypes"):
        raise NibbleError(f"llama.cpp is not usable ({facts.get('error') or 'no file types'}); "
                          "run the set-up command from README.md")
    out = []
    for attr, ftype in sorted(facts["ftypes"].items(), key=lambda kv: kv[0]):
        key = attr[len("LLAMA_FTYPE_"):]
        if key in _HIDDEN:
            continue
        name = key.removeprefix("MOSTLY_").removeprefix("ALL_")
        if "MOE" in name or "FP4" in name:
            continue  # mixture-of-experts / fp4-only types: none of the supported families use them
        out.append(QuantType(
            name=name, ftype=ftype, description=_DESCRIPTIONS.get(name, ""),
            needs_imatrix=_needs_imatrix(name),
            recommends_imatrix=name.startswith("IQ") or name.startswith(("Q2_K", "Q3_K")),
        ))
    order = {n: i for i, n in enumerate(_DESCRIPTIONS)}
    return tuple(sorted(out, key=lambda t: (order.get(t.name, 999), t.name)))


def find_type(name: str) -> QuantType:
    """The installed llama.cpp's type for ``name`` (aliases accepted), or a NibbleError listing them."""
    types = {t.name: t for t in quant_types()}
    return types[parse_type(name, types, also="AWQ")]
