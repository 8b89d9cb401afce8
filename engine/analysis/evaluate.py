"""Quality of a candidate model against a reference: perplexity and KL divergence, llama-perplexity style.

The text is tokenized once, by the reference's tokenizer (with BOS in front when that tokenizer adds one),
and cut into ``n = len(tokens) // ctx`` windows of ``ctx`` tokens. Each window is run from scratch through
both models with its first token replaced by BOS (when the tokenizer uses BOS), and only the second half is
scored: the logits at positions ``ctx/2 .. ctx-2`` predicting tokens ``ctx/2+1 .. ctx-1``. So every scored
token has at least half a window of context, and the figures match ``llama-perplexity --kl-divergence``.

Per scored token: negative log-likelihood of the right token under each model, the KL divergence
``sum p_ref * (log p_ref - log p_cand)`` over the whole vocabulary, whether both models' most likely token
is the same, and the change ``p_cand - p_ref`` in the probability of the right token.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.core.errors import NibbleError, check_at_least
from engine.core.progress import Reporter
from engine.runtime import Runtime, check_same_vocab

from engine.core.resources import RESOURCES

DEFAULT_EVAL_TEXT = RESOURCES / "eval.txt"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


def token_scores(ref_logits: np.ndarray, cand_logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position figures for logits ``[n, vocab]`` of both models and the ``n`` right tokens."""
    lp_ref = log_softmax(ref_logits)
    lp_cand = log_softmax(cand_logits)
    rows = np.arange(len(targets))
    p_ref_all = np.exp(lp_ref)
    kld = (p_ref_all * (lp_ref - lp_cand)).sum(axis=-1)
    nll_ref = -lp_ref[rows, targets]
    nll_cand = -lp_cand[rows, targets]
    return {
        "nll_ref": nll_ref,
        "nll_cand": nll_cand,
        "kld": np.maximum(kld, 0.0),
        "same_top": np.argmax(ref_logits, axis=-1) == np.argmax(cand_logits, axis=-1),
        "p_diff": np.exp(-nll_cand) - np.exp(-nll_ref),
    }


@dataclass
class EvalResult:
    """Figures of one evaluation. ``to_json()`` gives the names scripts rely on."""

    reference: str
    candidate: str
    ctx: int
    chunks: int
    tokens: int  # scored tokens
    ppl_reference: float
    ppl_candidate: float
    kld_mean: float
    kld_median: float
    kld_p99: float
    kld_max: float
    top1_agreement: float
    delta_p_mean: float
    delta_p_rms: float
    ppl_reference_err: float = 0.0
    ppl_candidate_err: float = 0.0
    kld_mean_err: float = 0.0
    text_tokens: int = 0
    kld_per_chunk: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "reference": {"path": self.reference, "ppl": self.ppl_reference, "ppl_err": self.ppl_reference_err},
            "candidate": {"path": self.candidate, "ppl": self.ppl_candidate, "ppl_err": self.ppl_candidate_err},
            "kld": {"mean": self.kld_mean, "mean_err": self.kld_mean_err, "median": self.kld_median,
                    "p99": self.kld_p99, "max": self.kld_max},
            "top1_agreement": self.top1_agreement,
            "delta_p": {"mean": self.delta_p_mean, "rms": self.delta_p_rms},
            "tokens": self.tokens,
            "ctx": self.ctx,
            "chunks": self.chunks,
            "text_tokens": self.text_tokens,
            "ln_ppl_ratio": math.log(self.ppl_candidate / self.ppl_reference),
        }

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_err(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    mean = float(values.mean())
    err = float(values.std(ddof=0) / math.sqrt(n - 1)) if n > 10 else 0.0
    return mean, err


def eval_windows(tokens: list[int], ctx: int, bos_id: int | None) -> list[list[int]]:
    """The ``len(tokens) // ctx`` windows, each with BOS in place of its first token when ``bos_id``."""
    windows = []
    for i in range(len(tokens) // ctx):
        w = list(tokens[i * ctx:(i + 1) * ctx])
        if bos_id is not None:
            w[0] = bos_id
        windows.append(w)
    return windows


def read_eval_text(path: str | pathlib.Path | None) -> tuple[str, pathlib.Path]:
    p = pathlib.Path(path) if path else DEFAULT_EVAL_TEXT
    try:
        return p.read_text(encoding="utf-8"), p
    except FileNotFoundError:
        raise NibbleError(f"evaluation text {p} does not exist") from None
    except UnicodeDecodeError:
        raise NibbleError(f"evaluation text {p} is not UTF-8 text") from None


DEMO_TEXT_NAME = "the demo model's held-out dialogues"


def default_text_for(reference) -> tuple[str, str]:
    """Nibble's evaluation text; for the demo model, its own held-out dialogues (:data:`DEMO_TEXT_NAME`,
    whose chat markers are read as the special tokens they are)."""
    from engine.models.demo import heldout_text, is_demo_model

    ref_path = getattr(reference, "path", reference)
    if is_demo_model(ref_path):
        return heldout_text(), DEMO_TEXT_NAME
    text, path = read_eval_text(None)
    return text, str(path)


def evaluate(reference: Runtime | str | pathlib.Path, candidate: Runtime | str | pathlib.Path,
             text: str | None = None, ctx: int = 512, reporter: Reporter | None = None,
             text_name: str = "the evaluation text", max_chunks: int | None = None, **open_options) -> EvalResult:
    """Perplexity of both models and KL divergence of ``candidate`` against ``reference`` on ``text``
    (default: Nibble's evaluation text). Models are runtimes, or paths opened here with ``open_options``
    (device, gpu_layers, threads) and closed when done."""
    check_at_least(ctx, 2, "context length")
    check_at_least(max_chunks, 1, "windows to evaluate", optional=True)
    if text is None:
        text, text_name = default_text_for(reference)
    opened = []
    try:
        if not isinstance(reference, Runtime) or not isinstance(candidate, Runtime):
            from engine.runtime import open_runtime, uses_torch

            open_options.setdefault("share_with_torch", any(
                rt.kind != "gguf" if isinstance(rt, Runtime) else uses_torch(rt) for rt in (reference, candidate)))
            if not isinstance(reference, Runtime):
                reference = open_runtime(reference, n_ctx=ctx, **open_options)
                opened.append(reference)
            if not isinstance(candidate, Runtime):
                candidate = open_runtime(candidate, n_ctx=ctx, **open_options)
                opened.append(candidate)
        return _evaluate(reference, candidate, text, ctx, reporter or Reporter(), text_name, max_chunks)
    finally:
        for rt in opened:
            rt.close()


def check_eval_setup(reference: Runtime, candidate: Runtime, ctx: int) -> None:
    """Refuse, in one line, a context length the pair cannot be evaluated at."""
    if ctx < 8:
        raise NibbleError(f"context length {ctx} is too small; use at least 8 (llama.cpp's default is 512)",
                          setting="context length")
    for rt in (reference, candidate):
        if ctx > rt.n_ctx:
            raise NibbleError(f"context length {ctx} is longer than the {rt.n_ctx} tokens {rt.name} was opened with",
                              setting="context length")
    check_same_vocab(reference, candidate)


def eval_tokens(reference: Runtime, text: str, text_name: str) -> list[int]:
    return reference.tokenize(text, add_bos=reference.add_bos, special=text_name == DEMO_TEXT_NAME)


def text_windows(reference: Runtime, tokens: list[int], ctx: int, text_name: str) -> list[list[int]]:
    """The evaluation windows of ``ctx`` tokens, refusing a text too short for two of them."""
    if len(tokens) < 2 * ctx:
        raise NibbleError(f"{text_name} tokenizes to {len(tokens)} tokens, fewer than the {2 * ctx} needed for "
                          f"two windows of {ctx}; use a longer text or a shorter context length", setting="context length")
    return eval_windows(tokens, ctx, reference.bos_id if reference.add_bos else None)


def window_scores(reference: Runtime, candidate: Runtime, w: list[int], first: int) -> dict[str, np.ndarray]:
    """Per-position figures (see :func:`token_scores`) of one window, for the positions ``first .. len(w)-2``."""
    ref_logits = reference.logits(w, start=first)[:-1]
    cand_logits = candidate.logits(w, start=first)[:-1]
    return token_scores(ref_logits, cand_logits, np.asarray(w[first + 1:], dtype=np.int64))


def summarize(reference: Runtime, candidate: Runtime, ctx: int, text_tokens: int,
              per_window: list[dict[str, np.ndarray]]) -> EvalResult:
    """An :class:`EvalResult` from the per-window figures of the scored positions."""
    s = {k: np.concatenate([w[k] for w in per_window]) for k in per_window[0]}
    nll_ref, ref_err = _mean_err(s["nll_ref"])
    nll_cand, cand_err = _mean_err(s["nll_cand"])
    kld_mean, kld_err = _mean_err(s["kld"])
    kld = np.sort(s["kld"])
    ppl_ref, ppl_cand = math.exp(nll_ref), math.exp(nll_cand)
    return EvalResult(
        reference=str(reference.path), candidate=str(candidate.path), ctx=ctx, chunks=len(per_window),
        tokens=int(len(kld)), text_tokens=text_tokens,
        ppl_reference=ppl_ref, ppl_candidate=ppl_cand,
        ppl_reference_err=ppl_ref * ref_err, ppl_candidate_err=ppl_cand * cand_err,
        kld_mean=kld_mean, kld_mean_err=kld_err, kld_median=float(np.median(kld)),
        kld_p99=float(np.percentile(kld, 99.0)), kld_max=float(kld[-1]),
        top1_agreement=float(s["same_top"].mean()),
        delta_p_mean=float(s["p_diff"].mean()), delta_p_rms=float(np.sqrt((s["p_diff"] ** 2).mean())),
        kld_per_chunk=[float(w["kld"].mean()) for w in per_window],
    )


def _evaluate(reference: Runtime, candidate: Runtime, text: str, ctx: int, reporter: Reporter, text_name: str,
              max_chunks: int | None) -> EvalResult:
    check_eval_setup(reference, candidate, ctx)
    tokens = eval_tokens(reference, text, text_name)
    windows = text_windows(reference, tokens, ctx, text_name)
    if max_chunks:
        windows = windows[:max_chunks]
    per_window = []
    reporter.progress(0, len(windows), "evaluating")
    for i, w in enumerate(windows):
        reporter.check_cancel()
        per_window.append(window_scores(reference, candidate, w, ctx // 2))
        reporter.progress(i + 1, len(windows), f"window {i + 1}/{len(windows)}")
    return summarize(reference, candidate, ctx, len(tokens), per_window)
