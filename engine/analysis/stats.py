"""How quantization moved the weights: per-tensor error statistics and histograms.

For every quantized tensor of a GGUF (dequantized with the ``gguf`` package) or an AWQ checkpoint
(unpacked from its int4 layout), paired with the same tensor of the original model: a histogram of the
original weights, a histogram of the error (dequantized minus original), RMSE, largest absolute error,
relative error ``||error|| / ||original||``, cosine similarity and bits per weight; then a per-layer summary
and the tensors with the largest relative error.

Work goes tensor by tensor, and within a tensor in slices, so memory stays near the size of the largest
tensor. Block tensors come first, in layer order, so a viewer shows the first histograms at once.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np

from engine.core.errors import NibbleError, check_at_least
from engine.core.progress import Reporter

SLICE = 1 << 22  # elements per slice of a tensor
_BLK = re.compile(r"(?:^|\.)(?:blk|layers|h|block|blocks)\.(\d+)\.")


@dataclass
class Histogram:
    edges: list[float]  # bins + 1 edges
    counts: list[int]


@dataclass
class TensorStats:
    name: str  # the quantized file's name for the tensor
    source_name: str  # the original model's name
    layer: int | None
    shape: list[int]
    qtype: str
    n_elements: int
    bits_per_weight: float
    rmse: float
    max_abs_error: float
    relative_error: float
    cosine: float
    weight_rms: float
    weight_hist: Histogram
    error_hist: Histogram


@dataclass
class LayerSummary:
    layer: int | None  # None: tensors outside the blocks (embeddings, output)
    tensors: int
    n_elements: int
    bits_per_weight: float
    rmse: float
    relative_error: float
    min_cosine: float


@dataclass
class StatsReport:
    original: str
    quantized: str
    format: str
    tensors: list[TensorStats] = field(default_factory=list)
    layers: list[LayerSummary] = field(default_factory=list)
    worst: list[str] = field(default_factory=list)  # names, largest relative error first
    bits_per_weight: float = 0.0

    def to_json(self, histograms: bool = True) -> dict:
        d = asdict(self)
        if not histograms:
            for t in d["tensors"]:
                t.pop("weight_hist")
                t.pop("error_hist")
        return d


def layer_of(name: str) -> int | None:
    m = _BLK.search(name)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------------------------------
# one pair of tensors


def _span(lo: float, hi: float) -> tuple[float, float]:
    """A range histograms can split into bins, even when all values are equal."""
    pad = 1e-3 * max(abs(lo), abs(hi), 1e-6)
    return (lo - pad, hi + pad) if hi - lo < pad else (lo, hi)


def _histogram(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    counts = np.zeros(bins, np.int64)
    for s in range(0, x.size, SLICE):
        counts += np.histogram(x[s:s + SLICE], bins=bins, range=(lo, hi))[0]
    return counts


def tensor_stats(original: np.ndarray, dequantized: np.ndarray, *, name: str, source_name: str, qtype: str,
                 n_bytes: int, bins: int = 64) -> TensorStats:
    """Error figures and histograms for one tensor (both arrays of the same shape, any float dtype)."""
    w = np.ascontiguousarray(original).reshape(-1)
    d = np.ascontiguousarray(dequantized).reshape(-1)
    if w.size != d.size:
        raise NibbleError(f"tensor {name}: the quantized file has {d.size:,} values, the original "
                          f"{source_name} has {w.size:,}; the two models do not match")
    sw2 = sd2 = swd = se2 = 0.0
    emax = 0.0
    wmin, wmax = math.inf, -math.inf
    for s in range(0, w.size, SLICE):
        a = w[s:s + SLICE].astype(np.float64)
        b = d[s:s + SLICE].astype(np.float64)
        e = b - a
        sw2 += float(a @ a)
        sd2 += float(b @ b)
        swd += float(a @ b)
        se2 += float(e @ e)
        emax = max(emax, float(np.abs(e).max()))
        wmin, wmax = min(wmin, float(a.min())), max(wmax, float(a.max()))
    n = w.size
    wlo, whi = _span(wmin, wmax)
    w_edges = np.linspace(wlo, whi, bins + 1)
    w_counts = _histogram(w, wlo, whi, bins)
    elo, ehi = _span(-emax, emax)
    e_edges = np.linspace(elo, ehi, bins + 1)
    e_counts = np.zeros(bins, np.int64)
    for s in range(0, n, SLICE):
        e = d[s:s + SLICE].astype(np.float64) - w[s:s + SLICE].astype(np.float64)
        e_counts += np.histogram(e, bins=bins, range=(elo, ehi))[0]
    denom = math.sqrt(sw2 * sd2)
    return TensorStats(
        name=name, source_name=source_name, layer=layer_of(name), shape=list(original.shape), qtype=qtype,
        n_elements=int(n), bits_per_weight=8.0 * n_bytes / n,
        rmse=math.sqrt(se2 / n), max_abs_error=emax,
        relative_error=math.sqrt(se2 / sw2) if sw2 > 0 else 0.0,
        cosine=swd / denom if denom > 0 else 1.0, weight_rms=math.sqrt(sw2 / n),
        weight_hist=Histogram([float(x) for x in w_edges], [int(c) for c in w_counts]),
        error_hist=Histogram([float(x) for x in e_edges], [int(c) for c in e_counts]),
    )


# ----------------------------------------------------------------------------------------------------
# the original model's tensors


class OriginalTensors:
    """Tensors of the original model by name: a Hugging Face folder (safetensors) or an unquantized GGUF."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.is_gguf = path.is_file()
        self.source = None
        if self.is_gguf:
            from engine.models.inspect import open_gguf

            self._gguf = {t.name: t for t in open_gguf(path).tensors}
            self.names = list(self._gguf)
            return
        from engine.models.source import open_source

        self.source = open_source(path)
        self.names = list(self.source.tensors)

    def __contains__(self, name: str) -> bool:
        return name in (self._gguf if self.is_gguf else self.source.tensors)

    def get(self, name: str) -> np.ndarray:
        if self.is_gguf:
            from gguf.quants import dequantize

            t = self._gguf[name]
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        return self.source.read_f32(name)


# ----------------------------------------------------------------------------------------------------
# pairing GGUF tensors with the original


def _order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (layer_of(n) is None, layer_of(n) or 0, n))


class _GGUFPairs:
    """GGUF tensors and their originals, paired by Nibble's converter plan: the same name mapping and the
    same q/k row permutation it applies, so a converted-but-unquantized tensor compares exactly equal."""

    format = "gguf"

    def __init__(self, original: OriginalTensors, quantized: pathlib.Path):
        from gguf import GGMLQuantizationType

        from engine.runtime import read_whole_gguf

        self.original = original
        self.tensors = {t.name: t for t in read_whole_gguf(quantized).tensors}
        if original.is_gguf:
            self.source = {n: n for n in self.tensors if n in original}
            self.plan: dict = {}
        else:
            from engine.gguf.convert import plan_tensors

            self.plan = {t.gguf_name: t for t in plan_tensors(original.source)
                         if t.sources and t.gguf_name in self.tensors}
            self.source = {n: t.source_label for n, t in self.plan.items()}
        quantized_names = [n for n, t in self.tensors.items()
                           if n in self.source and t.tensor_type != GGMLQuantizationType.F32]
        if not quantized_names:  # an all-F32 file: compare what there is
            quantized_names = [n for n in self.tensors if n in self.source]
        if not quantized_names:
            raise NibbleError(f"no tensor of {quantized.name} matches a tensor of {original.path.name}; "
                              "is it a quantization of this model?")
        self.names = _order(quantized_names)

    def load(self, name: str):
        from gguf.quants import dequantize

        from engine.models.families.tensors import materialise

        t = self.tensors[name]
        deq = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if name in self.plan:  # the original as the converter wrote it: stacked, permuted, offset
            w = materialise(self.plan[name], self.original.source.read_f32)
        else:
            w = self.original.get(self.source[name])
        if w.size == deq.size:
            w = w.reshape(deq.shape)
        return w, deq, t.tensor_type.name, int(t.n_bytes)

    def qtype(self, name: str) -> str:
        return self.tensors[name].tensor_type.name


# ----------------------------------------------------------------------------------------------------
# AWQ (engine.analysis.awq_pairs)

#: What a tensor's error is measured against, by the quantized model's kind (for the viewer to say).
BASIS = {
    "gguf": "Each tensor is compared with the original as the converter writes it.",
    "awq": "AWQ scales each linear's input channels and divides the layer before by the same scale; each tensor "
           "is compared after undoing that (scales read from the norms, or fitted on the paired linear), so "
           "the error is the rounding's alone.",
}


# ----------------------------------------------------------------------------------------------------
# the whole model


def open_pairs(original, quantized):
    """Pair the tensors of ``quantized`` (a GGUF, or an AWQ folder) with those of ``original``."""
    from engine.runtime import model_kind
    from engine.models.source import resolve_model_path

    original = resolve_model_path(original)
    quantized = resolve_model_path(quantized)
    okind = model_kind(original)
    if okind == "awq":
        raise NibbleError(f"{original} is itself an AWQ checkpoint; pass the original model first")
    orig = OriginalTensors(original)
    qkind = model_kind(quantized)
    if qkind == "gguf":
        return _GGUFPairs(orig, quantized)
    if qkind == "awq":
        from engine.analysis.awq_pairs import AWQPairs

        return AWQPairs(orig, quantized, order=_order)
    raise NibbleError(f"{quantized} is not quantized (pass a .gguf file or an AWQ folder as QUANTIZED)")


def iter_stats(original, quantized, *, bins: int = 64, reporter: Reporter | None = None,
               names: list[str] | None = None) -> Iterator[TensorStats]:
    """Yield :class:`TensorStats` one tensor at a time, block tensors first in layer order."""
    reporter = reporter or Reporter()
    pairs = open_pairs(original, quantized)
    todo = names or pairs.names
    for i, name in enumerate(todo):
        reporter.check_cancel()
        w, deq, qtype, n_bytes = pairs.load(name)
        yield tensor_stats(w, deq, name=name, source_name=getattr(pairs, "source", {}).get(name, name),
                           qtype=qtype, n_bytes=n_bytes, bins=bins)
        del w, deq
        reporter.progress(i + 1, len(todo), name)


def tensor_names(original, quantized) -> list[str]:
    """The names ``iter_stats`` will visit, in its order (for a viewer's list)."""
    return list(open_pairs(original, quantized).names)


def tensor_types(original, quantized) -> dict[str, str]:
    """Each tensor ``iter_stats`` will visit and its quantization type, in its order, from the headers only."""
    pairs = open_pairs(original, quantized)
    return {n: pairs.qtype(n) for n in pairs.names}


def summarize(tensors: list[TensorStats]) -> list[LayerSummary]:
    groups: dict[int | None, list[TensorStats]] = {}
    for t in tensors:
        groups.setdefault(t.layer, []).append(t)
    out = []
    for layer in sorted(groups, key=lambda k: (k is None, k or 0)):
        ts = groups[layer]
        n = sum(t.n_elements for t in ts)
        se2 = sum(t.rmse**2 * t.n_elements for t in ts)
        sw2 = sum(t.weight_rms**2 * t.n_elements for t in ts)
        out.append(LayerSummary(
            layer=layer, tensors=len(ts), n_elements=n,
            bits_per_weight=sum(t.bits_per_weight * t.n_elements for t in ts) / n,
            rmse=math.sqrt(se2 / n), relative_error=math.sqrt(se2 / sw2) if sw2 > 0 else 0.0,
            min_cosine=min(t.cosine for t in ts),
        ))
    return out


def compute_stats(original, quantized, *, bins: int = 64, top: int = 10, reporter: Reporter | None = None,
                  on_tensor: Callable[[TensorStats], None] | None = None) -> StatsReport:
    """All tensors, the per-layer summary, and the ``top`` tensors with the largest relative error."""
    check_at_least(bins, 1, "histogram bins")
    check_at_least(top, 0, "worst tensors to list")
    pairs_format = "awq" if pathlib.Path(quantized).is_dir() else "gguf"
    report = StatsReport(original=str(original), quantized=str(quantized), format=pairs_format)
    for ts in iter_stats(original, quantized, bins=bins, reporter=reporter):
        report.tensors.append(ts)
        if on_tensor is not None:
            on_tensor(ts)
    report.layers = summarize(report.tensors)
    report.worst = [t.name for t in sorted(report.tensors, key=lambda t: -t.relative_error)[:top]]
    n = sum(t.n_elements for t in report.tensors)
    report.bits_per_weight = sum(t.bits_per_weight * t.n_elements for t in report.tensors) / n if n else 0.0
    return report
