"""The engine calls the Chat, Compare and Analysis views make, in one place.

Each function here is plain Python, runs in a worker thread (never on the UI thread), and takes the
engine's reporter where it streams or can be cancelled. A feature this build lacks raises
:class:`app.features.Missing`, which the view shows as "not available in this build".
"""

from __future__ import annotations

from typing import Any

from app.features import Missing, engine_function, require  # noqa: F401  (Missing is re-exported)


def runtime_available() -> bool:
    return engine_function("runtime", "open_runtime") is not None


def open_model(path: str, **options: Any):
    """Load a model for generation (GGUF through llama.cpp, originals and AWQ through transformers)."""
    # The app may load an original model through torch at any time: on GPU builds of llama.cpp a GGUF
    # then runs in a child process (see engine.core.llama).
    options.setdefault("share_with_torch", True)
    return require("runtime", "open_runtime")(path, **options)


def close_model(runtime) -> None:
    close = getattr(runtime, "close", None)
    if close:
        close()


def chat_stream(runtime, messages: list[dict], settings: dict, reporter) -> dict:
    """Stream a reply to ``messages`` with the model's chat template; each piece of text goes to
    ``reporter.emit``. Stops between tokens when the reporter is cancelled. Returns the figures shown."""
    import time

    ids = runtime.chat_prompt_ids(messages)
    started = time.perf_counter()
    first = None
    for _tok, piece in runtime.generate_tokens(
        ids, max_tokens=int(settings.get("max_tokens", 256)), temperature=float(settings.get("temperature", 0.0)),
        top_p=float(settings.get("top_p", 1.0)), cancel=reporter.is_cancelled,
    ):
        if first is None:
            first = time.perf_counter()
        reporter.emit(piece)
        time.sleep(0)  # let the UI thread take the interpreter between tokens
    ended = time.perf_counter()
    res = runtime.last_generation
    n = len(res.token_ids)
    gen_time = ended - (first or started)
    return {
        "completion_tokens": n,
        "prompt_tokens": res.prompt_tokens,
        "tokens_per_second": (n - 1) / gen_time if n > 1 and gen_time > 0 else None,
        "context_used": res.prompt_tokens + n,
        "context_size": runtime.n_ctx,
        "finish_reason": res.finish_reason,
        "seconds": ended - started,
    }


def compare_available() -> bool:
    return engine_function("analysis.compare", "compare") is not None and runtime_available()


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def token_pieces(runtime, ids: list[int]) -> list[str]:
    """The text each generated token added, so the view can mark one token."""
    pieces, prev = [], ""
    for i in range(len(ids)):
        text = runtime.detokenize(ids[: i + 1])
        pieces.append(text[len(prev):])
        prev = text
    return pieces


def compare(original: str, quantized: str, prompt: str, settings: dict, reporter) -> dict:
    """Both models answer ``prompt`` (chat template, same settings); streamed pieces go to
    ``reporter.emit(("original" | "quantized", text))``. Returns both answers token by token, the first
    divergence, per-side tokens/s and memory, and the KL divergence along the original's answer."""
    import time

    run = require("analysis.compare", "compare")
    opened = []
    memory = []
    try:
        for i, path in enumerate((original, quantized)):
            reporter.check_cancel()
            reporter.progress(i, 3, f"Loading {path}…")
            before = _rss()
            opened.append(open_model(path))
            memory.append(max(0, _rss() - before))
        a, b = opened
        stamps: dict[str, list[float]] = {"original": [], "quantized": []}

        def sink(side):
            def on_token(text: str) -> None:
                stamps[side].append(time.perf_counter())
                reporter.emit((side, text))

            return on_token

        reporter.progress(2, 3, "Generating…")
        res = run(a, b, prompt, max_tokens=int(settings.get("max_tokens", 64)),
                  temperature=float(settings.get("temperature", 0.0)), chat=True,
                  system=settings.get("system") or None, on_token_a=sink("original"),
                  on_token_b=sink("quantized"), cancel=reporter.is_cancelled)
        sides = {}
        for side, rt, ids in (("original", a, res.tokens_a), ("quantized", b, res.tokens_b)):
            t = stamps[side]
            tps = (len(ids) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] and len(ids) > 1 else None
            sides[side] = {"pieces": token_pieces(rt, list(ids)), "token_ids": list(ids), "tokens_per_second": tps,
                           "memory_bytes": memory[0 if side == "original" else 1]}
        reporter.progress(3, 3, "Done.")
        return {**sides, "first_divergence": res.first_divergence, "kld_mean": res.kld_mean, "kld_max": res.kld_max,
                "top1_agreement": res.top1_agreement, "prompt_tokens": res.prompt_tokens}
    finally:
        for rt in opened:
            close_model(rt)


def evaluate_available() -> bool:
    return engine_function("analysis.evaluate", "evaluate") is not None


def evaluate(original: str, quantized: str, reporter) -> Any:
    return require("analysis.evaluate", "evaluate")(original, quantized, reporter=reporter)


def stats_available() -> bool:
    return engine_function("analysis.stats", "compute_stats") is not None


def list_tensors(original: str, quantized: str) -> list[str]:
    """The quantized model's tensors paired with the original's, in layer order."""
    return list(require("analysis.stats", "tensor_names")(original, quantized))


def tensor_stats(original: str, quantized: str, tensor: str, bins: int = 100):
    """Histograms and error figures of one tensor."""
    it = require("analysis.stats", "iter_stats")(original, quantized, bins=bins, names=[tensor])
    return next(iter(it))


def model_stats(original: str, quantized: str, reporter, bins: int = 100):
    """Every tensor's figures (each handed to ``reporter.emit`` as it is done) and the per-layer summary."""
    return require("analysis.stats", "compute_stats")(original, quantized, bins=bins, reporter=reporter,
                                             on_tensor=reporter.emit)
