"""An AWQ checkpoint's linears paired with the original's, for :mod:`engine.analysis.stats`."""

from __future__ import annotations

import json
import pathlib
from typing import Callable

import numpy as np

from engine.core.errors import NibbleError


class AWQPairs:
    """AWQ linears and their originals. AWQ multiplies each linear's input channels by a scale and divides the
    layer before by it (a norm, or the rows of v / up that feed o / down), so the checkpoint's weights are not
    the original's: each is compared after undoing that. The scales are read back from the model: a norm's
    is the original norm over the checkpoint's (exact); o's and down's, which went into v's and up's rows, are
    each fitted by least squares on the other linear of the pair, so no linear is measured against a scale
    fitted to itself."""

    format = "awq"

    def __init__(self, original, quantized: pathlib.Path, order: Callable[[list[str]], list[str]]):
        from safetensors import safe_open

        self.original = original
        try:
            cfg = json.loads((quantized / "config.json").read_text(encoding="utf-8"))
            self.group_size = int(cfg["quantization_config"]["group_size"])
        except (OSError, ValueError, KeyError):
            raise NibbleError(f"{quantized}/config.json has no AWQ quantization_config with a group_size") from None
        self._where: dict[str, pathlib.Path] = {}
        for f in sorted(quantized.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    self._where[k] = f
        prefixes = [k[: -len(".qweight")] for k in self._where if k.endswith(".qweight")]
        names = [p for p in prefixes if f"{p}.weight" in original]
        if not names:
            raise NibbleError(f"no AWQ layer of {quantized.name} matches a tensor of {original.path.name}")
        self.names = order(names)
        self.spec, self.offset, self.o_folded = _awq_layout(cfg)
        self._layer_folded: dict[str, bool] = {}

    def qtype(self, name: str) -> str:
        return f"AWQ int4 g{self.group_size}"

    def _get(self, key: str):
        from safetensors import safe_open

        with safe_open(str(self._where[key]), framework="pt") as st:
            return st.get_tensor(key)

    def _dequantized(self, name: str) -> tuple[np.ndarray, int]:
        from engine.awq.pack import dequantize_gemm

        qw, qz, sc = (self._get(f"{name}.{k}") for k in ("qweight", "qzeros", "scales"))
        n_bytes = sum(t.numel() * t.element_size() for t in (qw, qz, sc))
        return dequantize_gemm(qw, qz, sc, self.group_size).numpy(), int(n_bytes)

    def _norm_scale(self, prefix: str, norm: str) -> np.ndarray:
        key = f"{prefix}{norm}.weight"
        folded = self._get(key).float().numpy().astype(np.float64) + self.offset
        return (self.original.get(key).astype(np.float64) + self.offset) / folded

    def _scales(self, prefix: str, lin: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(scale of each input column, divisor of each output row) that AWQ folded into ``lin``."""
        spec = self.spec
        if not self._folded(prefix):
            return None, None
        cols = rows = None
        if lin in spec.qkv:
            cols = self._norm_scale(prefix, spec.attn_norm)
        elif lin in spec.mlp_in:
            cols = self._norm_scale(prefix, spec.mlp_norm)
        pairs = [(spec.up, spec.down)] + ([(spec.v, spec.o)] if self.o_folded else [])
        for producer, consumer in pairs:
            if lin == consumer:  # fitted on the producer's rows
                cols = self._fit_rows(prefix, producer, consumer)
            if lin == producer:  # fitted on the consumer's columns
                rows = self._fit_cols(prefix + consumer)
        return cols, rows

    def _folded(self, prefix: str) -> bool:
        """Whether AWQ folded scales into this layer: its norms differ from the original's by more than their
        rounding to fp16 (a checkpoint rounded to nearest without a scale search keeps them)."""
        if prefix not in self._layer_folded:
            self._layer_folded[prefix] = any(
                not np.allclose(self._norm_scale(prefix, norm), 1.0, rtol=0, atol=2e-3)
                for norm in (self.spec.attn_norm, self.spec.mlp_norm))
        return self._layer_folded[prefix]

    def _fit_cols(self, consumer: str) -> np.ndarray:
        w = self.original.get(f"{consumer}.weight").astype(np.float64)
        d = self._dequantized(consumer)[0].astype(np.float64)
        return np.einsum("ij,ij->j", w, d) / np.maximum(np.einsum("ij,ij->j", w, w), 1e-30)

    def _fit_rows(self, prefix: str, producer: str, consumer: str) -> np.ndarray:
        w = self.original.get(f"{prefix}{producer}.weight").astype(np.float64)
        d = self._dequantized(prefix + producer)[0].astype(np.float64)
        cols, _ = self._scales(prefix, producer) if producer in (*self.spec.qkv, *self.spec.mlp_in) else (None, None)
        if cols is not None:
            d = d / cols[None, :]
        n_in = self.original.get(f"{prefix}{consumer}.weight").shape[1]
        w, d = w[-n_in:], d[-n_in:]
        wd = np.einsum("ij,ij->i", w, d)
        return np.einsum("ij,ij->i", w, w) / np.where(np.abs(wd) > 1e-30, wd, 1e-30)

    def load(self, name: str):
        deq, n_bytes = self._dequantized(name)
        w = self.original.get(f"{name}.weight")
        lin = next((k for k in (self.spec.linears if self.spec else ()) if name.endswith("." + k)), None)
        if lin is not None:
            prefix = name[: -len(lin)]
            cols, rows = self._scales(prefix, lin)
            if cols is not None:
                deq = deq / cols[None, :].astype(np.float32)
            if rows is not None:
                deq = deq.copy()
                deq[-rows.size:] *= rows[:, None].astype(np.float32)
        return w, deq, self.qtype(name), int(n_bytes)


def _awq_layout(cfg: dict):
    """The family's AWQ description (None where Nibble does not know it), its norm offset, and whether o's
    scales were folded into v (no key/value head shared)."""
    try:
        from engine.awq.config import awq_family

        fam = awq_family(cfg, "config.json")
    except (NibbleError, ImportError):
        return None, 0.0, False
    text = cfg.get("text_config") or cfg
    heads = text.get("num_attention_heads")
    return fam.awq, float(fam.norm_offset), heads is not None and text.get("num_key_value_heads", heads) == heads
