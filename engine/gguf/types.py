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

# Short descriptions, for people choosing a type; they give no bits per weight, which depend on the model and
# come from engine.estimate alone. The list of types itself is read from the installed library (see
# quant_types), so new types appear without a change here; this dict also sets the order they are listed in.
_DESCRIPTIONS = {
    "F32": "32-bit float, no loss", "F16": "16-bit float, practically lossless", "BF16": "bfloat16, as most models are trained",
    "Q8_0": "nearly lossless", "Q6_K": "very small loss", "Q5_K_M": "small loss",
    "Q5_K_S": "small loss", "Q5_1": "legacy", "Q5_0": "legacy",
    "Q4_K_M": "the usual balance", "Q4_K_S": "a little smaller than Q4_K_M", "Q4_1": "legacy", "Q4_0": "legacy",
    "IQ4_NL": "non-linear", "IQ4_XS": "non-linear", "Q3_K_L": "", "Q3_K_M": "",
    "Q3_K_S": "", "IQ3_M": "", "IQ3_S": "", "IQ3_XS": "", "IQ3_XXS": "",
    "Q2_K": "large loss", "Q2_K_S": "large loss", "IQ2_M": "", "IQ2_S": "",
    "IQ2_XS": "", "IQ2_XXS": "", "IQ1_M": "extreme loss", "IQ1_S": "extreme loss",
    "TQ1_0": "ternary (for ternary-trained models)", "TQ2_0": "ternary (for ternary-trained models)",
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
