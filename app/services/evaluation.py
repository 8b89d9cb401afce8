"""Compare's and Analysis' calls: side by side, full evaluation, tensor statistics, task sets, the context sweep and speed."""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

from engine.analysis.compare import token_pieces
from engine.analysis.stats import StatsReport, TensorStats
from engine.estimate import ModelPlan, load_plan

from app.services.chat import close_model, open_model
from app.services.library import kind_of


# -- compare ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareSide:
    """One model's answer: the text each token added, the ids, its speed, and what the loaded model holds
    (its weights, and the KV cache: llama.cpp's for the whole context, torch's for the answer's sequence)."""

    pieces: list[str]
    token_ids: list[int]
    tokens_per_second: float | None
    weights_bytes: int
    kv_cache_bytes: int
    kv_cache_tokens: int  # the positions the KV cache holds room for


@dataclass(frozen=True)
class CompareOutcome:
    original: CompareSide
    quantized: CompareSide
    first_divergence: int | None  # index of the first generated token that differs; None: identical
    kld_mean: float  # KL divergence of the quantized model along the original's answer
    kld_max: float
    top1_agreement: float
    prompt_tokens: int
    kld_per_token: tuple[float, ...] = ()  # along the original's answer, one a token (the heat strip)


def compare(original: str, quantized: str, prompt: str, *, max_tokens: int, temperature: float,
            reporter, system: str | None = None) -> CompareOutcome:
    """Both models answer ``prompt`` (chat template, same settings); streamed pieces go to
    ``reporter.emit(("original" | "quantized", text))``."""
    from engine.analysis.compare import compare as run

    opened = []
    try:
        for i, path in enumerate((original, quantized)):
            reporter.check_cancel()
            reporter.progress(i, 3, f"Loading {path}…")
            opened.append(open_model(path))
        a, b = opened
        stamps: dict[str, list[float]] = {"original": [], "quantized": []}

        def sink(side):
            def on_token(text: str) -> None:
                stamps[side].append(time.perf_counter())
                reporter.emit((side, text))

            return on_token

        reporter.progress(2, 3, "Generating…")
        res = run(a, b, prompt, max_tokens=max_tokens, temperature=temperature, chat=True, system=system,
                  on_token_a=sink("original"), on_token_b=sink("quantized"), cancel=reporter.is_cancelled)
        sides = []
        for side, rt, ids in (("original", a, res.tokens_a), ("quantized", b, res.tokens_b)):
            t = stamps[side]
            tps = (len(ids) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] and len(ids) > 1 else None
            sides.append(CompareSide(token_pieces(rt, list(ids)), list(ids), tps, *rt.memory_bytes()))
        reporter.progress(3, 3, "Done.")
        return CompareOutcome(sides[0], sides[1], res.first_divergence, res.kld_mean, res.kld_max,
                              res.top1_agreement, res.prompt_tokens, tuple(res.kld_per_token))
    finally:
        for rt in opened:
            close_model(rt)


@dataclass(frozen=True)
class EvalFigures:
    """The figures ``nibble eval --json`` gives, as the Compare view shows them."""

    ppl_original: float
    ppl_quantized: float
    kld_mean: float
    kld_p99: float
    top1_agreement: float
    chunks: int

    @classmethod
    def from_json(cls, d: dict) -> EvalFigures:
        return cls(d["reference"]["ppl"], d["candidate"]["ppl"], d["kld"]["mean"], d["kld"]["p99"],
                   d["top1_agreement"], d["chunks"])


# -- analysis --------------------------------------------------------------------------------------


def list_tensors(original: str, quantized: str) -> dict[str, str]:
    """The quantized model's tensors paired with the original's, in layer order, with their quantization type."""
    from engine.analysis.stats import tensor_types

    return tensor_types(original, quantized)


def comparison_basis(quantized: str) -> str:
    """What Analysis compares each quantized tensor with, in a sentence, by the quantized model's kind."""
    from engine.analysis.stats import BASIS

    return BASIS.get(kind_of(quantized), "")


def tensor_stats(original: str, quantized: str, tensor: str, bins: int = 100) -> TensorStats:
    """Histograms and error figures of one tensor."""
    from engine.analysis.stats import iter_stats

    return next(iter(iter_stats(original, quantized, bins=bins, names=[tensor])))


def model_stats(original: str, quantized: str, reporter, bins: int = 100) -> StatsReport:
    """Every tensor's figures (each handed to ``reporter.emit`` as it is done) and the per-layer summary."""
    from engine.analysis.stats import compute_stats

    return compute_stats(original, quantized, bins=bins, reporter=reporter, on_tensor=reporter.emit)


# -- quality along the context, task sets, speed like with like ------------------------------------------
# (for the Compare view's "Run task set", context and KV cache panels; each returns the engine's dataclass)


def run_task_set(original: str, quantized: str, reporter, tasks_file: str | None = None,
                 questions: int = 100, max_tokens: int = 32):
    """Both models answer a task set (the demo's held-out questions, or a JSONL of prompt/answer pairs):
    an ``engine.analysis.taskset.TaskCompareResult`` (accuracy, differing answers, KLD per token)."""
    from engine.analysis.taskset import DEMO_TASKS, compare_tasks, demo_tasks, read_tasks

    items, name = (read_tasks(tasks_file), tasks_file) if tasks_file else (demo_tasks(questions), DEMO_TASKS)
    a, b = open_model(original), None
    try:
        b = open_model(quantized)
        return compare_tasks(a, b, items, task_name=str(name), max_tokens=max_tokens, reporter=reporter)
    finally:
        for rt in (a, b):
            if rt is not None:
                close_model(rt)


def run_context_sweep(original: str, quantized: str, lengths: list[int], reporter, kv_type: str = "f16",
                      max_windows: int | None = None):
    """KLD and same-top-token at each context length and by position: an ``engine.analysis.sweep.SweepResult``."""
    from engine.analysis.sweep import context_sweep

    a, b = open_model(original, n_ctx=max(lengths)), None
    try:
        b = open_model(quantized, n_ctx=max(lengths), kv_type=kv_type)
        return context_sweep(a, b, lengths, max_windows=max_windows, reporter=reporter)
    finally:
        for rt in (a, b):
            if rt is not None:
                close_model(rt)


def compare_speed(original: str, quantized: str, reporter):
    """Speed and memory of both through the same runtime: an ``engine.pipelines.speed.SpeedComparison``."""
    from engine.pipelines.speed import compare_speed as run

    return run(original, quantized, reporter=reporter)


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # the KV cache types the Compare view measures and estimates


def gguf_type(path: str) -> str:
    """The file type of a GGUF (Q4_K_M, BF16, ...), as llama.cpp reports it."""
    from engine.pipelines.speed import gguf_precision

    return gguf_precision(pathlib.Path(path))


def sweep_plan(quantized: str) -> tuple[ModelPlan, str]:
    """The quantized GGUF's plan (for its trained context and the memory estimate) and its file type.
    Reads headers only; call it off the UI thread."""
    return load_plan(quantized), gguf_type(quantized)


def run_kv_sweeps(original: str, quantized: str, lengths: list[int], kv_types: list[str], reporter,
                  max_windows: int | None = None) -> list:
    """:func:`run_context_sweep` once per KV cache type of the quantized model, each result handed to
    ``reporter.emit`` as it is done; the list of them."""
    out = []
    for n, kv in enumerate(kv_types, 1):
        reporter.check_cancel()
        reporter.progress(0, 1, f"KV cache {kv} ({n}/{len(kv_types)})")
        out.append(run_context_sweep(original, quantized, lengths, reporter, kv_type=kv, max_windows=max_windows))
        reporter.emit(out[-1])
    return out
