"""Quality along the context: KL divergence and same-top-token at several context lengths, and by
position within the window.

``context_sweep(ref, cand, [256, 512, 1024])`` evaluates the pair at each length exactly as
:func:`engine.analysis.evaluate.evaluate` does (windows of that length, BOS first, the second half scored),
so each point equals a plain evaluation at that context. At the longest length every position of each
window is scored as well, and binned by its position: whether the candidate's error accumulates along
the window (a quantized KV cache, say, or rounding that compounds) is then measured, not assumed.

The candidate's KV cache type (``f16``, ``q8_0``, ``q4_0``) is the runtime's own, so the cost of a
quantized cache is measured the same way: open the same GGUF with another ``kv_type`` and sweep again.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import time
from dataclasses import asdict, dataclass

import numpy as np

from engine.analysis.evaluate import (
    EvalResult, check_eval_setup, default_text_for, eval_tokens, summarize, text_windows, window_scores,
)
from engine.core.errors import NibbleError
from engine.core.progress import Reporter
from engine.runtime import Runtime

POSITION_BINS = 16


@dataclass
class PositionBin:
    """Figures of the positions ``start <= p < end`` (the position of the predicting token in its window)."""

    start: int
    end: int
    tokens: int
    kld_mean: float
    top1_agreement: float


@dataclass
class SweepResult:
    """A context sweep: one :class:`EvalResult` per length, and figures by position at the longest."""

    reference: str
    candidate: str
    kv_type: str  # the candidate's KV cache type
    text_name: str
    text_tokens: int
    points: list[EvalResult]
    positions: list[PositionBin]
    seconds: float = 0.0
    windows_per_length: int | None = None  # the cap asked for, if any

    @property
    def lengths(self) -> list[int]:
        return [p.ctx for p in self.points]

    def to_json(self) -> dict:
        return {
            "reference": self.reference, "candidate": self.candidate, "kv_type": self.kv_type,
            "text": self.text_name, "text_tokens": self.text_tokens, "seconds": self.seconds,
            "lengths": [{"ctx": p.ctx, "windows": p.chunks, "tokens": p.tokens, "kld_mean": p.kld_mean,
                         "kld_mean_err": p.kld_mean_err, "kld_p99": p.kld_p99, "top1_agreement": p.top1_agreement,
                         "ppl_reference": p.ppl_reference, "ppl_candidate": p.ppl_candidate} for p in self.points],
            "positions": {"ctx": self.points[-1].ctx if self.points else 0,
                          "bins": [asdict(b) for b in self.positions]},
        }

    def csv_text(self) -> str:
        """One table: a row per context length, then a row per position bin at the longest length."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["what", "ctx", "position_start", "position_end", "tokens", "kld_mean", "kld_p99",
                    "top1_agreement", "ppl_reference", "ppl_candidate", "kv_type"])
        for p in self.points:
            w.writerow(["length", p.ctx, p.ctx // 2, p.ctx - 1, p.tokens, repr(p.kld_mean), repr(p.kld_p99),
                        repr(p.top1_agreement), repr(p.ppl_reference), repr(p.ppl_candidate), self.kv_type])
        longest = self.points[-1].ctx if self.points else 0
        for b in self.positions:
            w.writerow(["position", longest, b.start, b.end, b.tokens, repr(b.kld_mean), "",
                        repr(b.top1_agreement), "", "", self.kv_type])
        return out.getvalue()

    def write_csv(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write :meth:`csv_text` to ``path`` (through a temporary name, so no half-written file is left)."""
        path = pathlib.Path(path)
        if path.is_dir() or not path.parent.is_dir():
            raise NibbleError(f"CSV file {path} cannot be written: name a file in an existing folder",
                              setting="output path")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(self.csv_text(), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def parse_lengths(spec: str, trained: int | None = None) -> list[int]:
    """``"256,512,1024"`` (``max``: the model's trained context) as sorted distinct lengths, each checked."""
    lengths = set()
    for part in (p.strip().lower() for p in str(spec).split(",")):
        if not part:
            continue
        if part == "max":
            if not trained:
                raise NibbleError("context sweep: 'max' needs a model whose trained context is known; give a number",
                                  setting="context length")
            lengths.add(trained)
            continue
        try:
            n = int(part)
        except ValueError:
            raise NibbleError(f"context sweep: {part!r} is not a whole number of tokens; write e.g. 256,512,1024",
                              setting="context length") from None
        if n < 8:
            raise NibbleError(f"context sweep: length {n} is too small; use at least 8", setting="context length")
        lengths.add(n)
    if not lengths:
        raise NibbleError("context sweep: no lengths given; write e.g. 256,512,1024", setting="context length")
    if trained and max(lengths) > trained:
        raise NibbleError(f"context sweep: {max(lengths)} is longer than the model's trained context of {trained} "
                          "tokens; sweep up to that", setting="context length")
    return sorted(lengths)


def position_bins(kld: np.ndarray, same: np.ndarray, positions: np.ndarray, ctx: int,
                  n_bins: int = POSITION_BINS) -> list[PositionBin]:
    """Mean KLD and same-top rate of the positions in each of ``n_bins`` equal stretches of ``0 .. ctx-2``."""
    edges = np.unique(np.linspace(0, ctx - 1, min(n_bins, ctx - 1) + 1).round().astype(int))
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (positions >= lo) & (positions < hi)
        if m.any():
            bins.append(PositionBin(int(lo), int(hi), int(m.sum()), float(kld[m].mean()), float(same[m].mean())))
    return bins


def context_sweep(reference: Runtime, candidate: Runtime, lengths: list[int], text: str | None = None,
                  text_name: str = "the evaluation text", max_windows: int | None = None,
                  reporter: Reporter | None = None) -> SweepResult:
    """Evaluate ``candidate`` against ``reference`` at each of ``lengths`` (see the module's docstring).

    Both runtimes must be open with a context of at least ``max(lengths)``. ``max_windows`` caps the windows
    at each length (the first ones of the text)."""
    reporter = reporter or Reporter()
    lengths = sorted(set(lengths))
    if text is None:
        text, text_name = default_text_for(reference)
    for ctx in lengths:
        check_eval_setup(reference, candidate, ctx)
    t0 = time.perf_counter()
    tokens = eval_tokens(reference, text, text_name)
    plan = []
    for ctx in lengths:
        windows = text_windows(reference, tokens, ctx, text_name)
        plan.append((ctx, windows[:max_windows] if max_windows else windows))
    total, done = sum(len(w) for _, w in plan), 0
    points: list[EvalResult] = []
    positions: list[PositionBin] = []
    reporter.progress(0, total, "context sweep")
    for ctx, windows in plan:
        longest = ctx == lengths[-1]
        first = 0 if longest else ctx // 2
        scored, kld_all, same_all = [], [], []
        for w in windows:
            reporter.check_cancel()
            s = window_scores(reference, candidate, w, first)
            half = ctx // 2 - first  # the rows a plain evaluation scores start here
            scored.append({k: v[half:] for k, v in s.items()})
            if longest:
                kld_all.append(s["kld"])
                same_all.append(s["same_top"])
            done += 1
            reporter.progress(done, total, f"context {ctx}: window {len(scored)}/{len(windows)}")
        points.append(summarize(reference, candidate, ctx, len(tokens), scored))
        if longest:
            pos = np.tile(np.arange(ctx - 1), len(kld_all))
            positions = position_bins(np.concatenate(kld_all), np.concatenate(same_all), pos, ctx)
    return SweepResult(
        reference=str(reference.path), candidate=str(candidate.path),
        kv_type=getattr(candidate, "kv_type", "f16"), text_name=text_name, text_tokens=len(tokens),
        points=points, positions=positions, seconds=time.perf_counter() - t0, windows_per_length=max_windows,
    )
