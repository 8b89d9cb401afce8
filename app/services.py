"""The engine as the views see it: typed calls and dataclass results, in one place.

Views import the engine only through this module (tests/test_layering.py checks), so what the app asks of
the engine can be read here in one go. Functions that take a ``reporter`` run in a worker thread
(:func:`app.jobs.run_in_thread`), never on the UI thread; streamed pieces go to ``reporter.emit``.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

from engine.analysis.stats import LayerSummary, StatsReport, TensorStats, layer_of  # noqa: F401  (Analysis reads these)
from engine.core.errors import NibbleError  # noqa: F401  (views catch it)
from engine.core.units import human_bytes  # noqa: F401  (the one byte formatter)
from engine.estimate import AwqCost, Estimate, ModelPlan, awq_cost, estimate, load_plan  # noqa: F401
from engine.estimate import context_choices  # noqa: F401  (the wizard's context list)
from engine.estimate.timing import ImatrixTime, imatrix_time, measured_flops, probe_flops  # noqa: F401
from engine.gguf.imatrix import WINDOW_TOKENS  # noqa: F401  (what importance matrix windows hold)
from engine.pipelines.queue import output_name  # noqa: F401  (the one rule for naming outputs)
from engine.gguf.types import QuantType, quant_types
from engine.hub import CachedModel, HubModel, download_model, list_cached_models, search_models  # noqa: F401
from engine.models.library import Entry as LibraryEntry
from engine.models.resolve import AWQ, GGUF, MODEL_KINDS, ORIGINAL, model_kind  # noqa: F401
from engine.runtime.chat import ChatSettings, Conversation, ReplyFigures  # noqa: F401

# -- models ----------------------------------------------------------------------------------------


def kind_of(path: str | pathlib.Path) -> str:
    """What ``path`` holds (ORIGINAL, GGUF or AWQ); a path that is none of them yet counts as an original."""
    try:
        return model_kind(pathlib.Path(path))
    except (NibbleError, OSError):
        return ORIGINAL


def demo_dir() -> pathlib.Path | None:
    """The bundled demo model's folder, when this build has one."""
    from engine.core.resources import DEMO_DIR

    return DEMO_DIR if (DEMO_DIR / "config.json").is_file() else None


def library_entries() -> list[LibraryEntry]:
    """The engine library's originals and outputs whose files are still there."""
    from engine.models import library

    return [e for e in library.list_entries() if not e.missing]


def record_in_library(path: str, kind: str, *, name: str = "", origin: str = "", qtype: str = "") -> None:
    """Add a model to the engine's library (an output with the original it was made from)."""
    from engine.models import library

    lib = library.default()
    if kind == ORIGINAL:
        lib.record_original(path, name=name or None)
    elif origin:
        lib.record_output(path, kind=kind, source_path=origin, type=qtype or kind)
    else:
        lib.add_entry(path, kind, type=qtype or None)


# -- quantize --------------------------------------------------------------------------------------


def gguf_types() -> list[QuantType]:
    """The GGUF types the installed llama.cpp writes, in the order people choose from."""
    return list(quant_types())


def outputs_dir() -> pathlib.Path:
    """Nibble's folder for outputs (NIBBLE_OUTPUTS, NIBBLE_HOME/outputs, or "Nibble" in the documents folder)."""
    from engine.models.library import outputs_dir as folder

    return folder()


def inside_install(path: str | pathlib.Path) -> bool:
    """Whether ``path`` is inside Nibble's installation (no place for outputs)."""
    from engine.core.resources import inside_install as inside

    return inside(path)


def sizable_types() -> set[str]:
    """The types engine.estimate can size (others are made, but their size is not known before)."""
    from engine.estimate import file_types

    return set(file_types())


@dataclass(frozen=True)
class CalibrationText:
    """A calibration text as the model's tokenizer sees it."""

    path: str
    tokens: int


def calibration_text(model: str, path: str | None) -> CalibrationText:
    """Count the tokens of ``path`` (None or "default": the text Nibble uses for ``model``); seconds on big files."""
    from engine.awq.calibration import calibration_file, count_tokens
    from engine.models.resolve import resolve_model_path

    src = resolve_model_path(model)
    return CalibrationText(str(calibration_file(path or None, src)), count_tokens(src, path or None))


def fit_samples(tokens: int, samples: int, seqlen: int) -> int:
    from engine.awq.calibration import fit_samples as fit

    return fit(tokens, samples, seqlen)


def check_outputs(model: str, types: list[str], out: str, *, calibration: str | None = None,
                  imatrix: str | None = None, threads: int | None = None) -> list[str]:
    """The engine's checks of an output before any work (a NibbleError naming the setting), for GGUF ``types``
    written to ``out`` (one type: the file; several: the folder) or AWQ (``types == ["AWQ"]``: the folder).
    Returns the outputs that exist already and would be replaced. Milliseconds: the UI thread may call it."""
    from engine.core.outputs import check_new_folder
    from engine.gguf.quantize import check_quantize_args
    from engine.models.resolve import resolve_model_path
    from engine.pipelines.queue import check_queue_folder

    src = resolve_model_path(model)
    target = pathlib.Path(out).expanduser()
    if types == ["AWQ"]:
        check_new_folder(target, inputs=[src])
        return []
    if len(types) == 1:
        outs = [target]
    else:
        check_queue_folder(target)
        outs = [target / output_name(model, t) for t in types]
    for t, o in zip(types, outs):
        if len(types) == 1 or o.parent.is_dir():  # a queue's folder is made when the job starts
            check_quantize_args(model, t, o, calibration=calibration, imatrix=imatrix, threads=threads)
    return [str(o) for o in outs if o.exists()]


def estimate_or_error(plan: ModelPlan, qtype: str, **settings) -> Estimate | str:
    """:func:`engine.estimate.estimate`, or the one-line reason this type cannot be sized."""
    try:
        return estimate(plan, qtype, **settings)
    except NibbleError as exc:
        return str(exc)


@dataclass(frozen=True)
class QuantizeOutcome:
    """What ``nibble quantize --json-progress`` reports when it is done (GGUF and AWQ alike)."""

    output: str
    type: str
    file_bytes: int | None
    seconds: float  # the engine's own time
    elapsed: float  # wall time as the app saw it, child process start-up included

    @classmethod
    def from_event(cls, event: dict, elapsed: float) -> QuantizeOutcome:
        return cls(str(event.get("output") or ""), str(event.get("type") or ""), event.get("file_bytes"),
                   float(event.get("seconds") or 0.0), elapsed)


# -- chat ------------------------------------------------------------------------------------------


def open_model(path: str, **options):
    """Load a model for generation (GGUF through llama.cpp, originals and AWQ through transformers)."""
    from engine.runtime import open_runtime

    # The app may load an original model through torch at any time: on GPU builds of llama.cpp a GGUF
    # then runs in a child process (see engine.core.llama).
    options.setdefault("share_with_torch", True)
    return open_runtime(path, **options)


def close_model(runtime) -> None:
    if runtime is not None:
        runtime.close()


def chat_reply(conversation: Conversation, reporter) -> ReplyFigures | None:
    """Stream the model's answer to ``conversation`` as it stands; each piece goes to ``reporter.emit``.
    Stops between tokens when the reporter is cancelled. Returns the reply's figures."""
    for piece in conversation.reply(cancel=reporter.is_cancelled):
        reporter.emit(piece)
        time.sleep(0)  # let the UI thread take the interpreter between tokens
    return conversation.last_figures


# -- compare ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareSide:
    """One model's answer: the text each token added, the ids, its speed and the memory loading it took."""

    pieces: list[str]
    token_ids: list[int]
    tokens_per_second: float | None
    memory_bytes: int


@dataclass(frozen=True)
class CompareOutcome:
    original: CompareSide
    quantized: CompareSide
    first_divergence: int | None  # index of the first generated token that differs; None: identical
    kld_mean: float  # KL divergence of the quantized model along the original's answer
    kld_max: float
    top1_agreement: float
    prompt_tokens: int


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


def compare(original: str, quantized: str, prompt: str, *, max_tokens: int, temperature: float,
            reporter, system: str | None = None) -> CompareOutcome:
    """Both models answer ``prompt`` (chat template, same settings); streamed pieces go to
    ``reporter.emit(("original" | "quantized", text))``."""
    from engine.analysis.compare import compare as run

    opened, memory = [], []
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
        res = run(a, b, prompt, max_tokens=max_tokens, temperature=temperature, chat=True, system=system,
                  on_token_a=sink("original"), on_token_b=sink("quantized"), cancel=reporter.is_cancelled)
        sides = []
        for n, (side, rt, ids) in enumerate((("original", a, res.tokens_a), ("quantized", b, res.tokens_b))):
            t = stamps[side]
            tps = (len(ids) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] and len(ids) > 1 else None
            sides.append(CompareSide(token_pieces(rt, list(ids)), list(ids), tps, memory[n]))
        reporter.progress(3, 3, "Done.")
        return CompareOutcome(sides[0], sides[1], res.first_divergence, res.kld_mean, res.kld_max,
                              res.top1_agreement, res.prompt_tokens)
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


def list_tensors(original: str, quantized: str) -> list[str]:
    """The quantized model's tensors paired with the original's, in layer order."""
    from engine.analysis.stats import tensor_names

    return list(tensor_names(original, quantized))


def tensor_stats(original: str, quantized: str, tensor: str, bins: int = 100) -> TensorStats:
    """Histograms and error figures of one tensor."""
    from engine.analysis.stats import iter_stats

    return next(iter(iter_stats(original, quantized, bins=bins, names=[tensor])))


def model_stats(original: str, quantized: str, reporter, bins: int = 100) -> StatsReport:
    """Every tensor's figures (each handed to ``reporter.emit`` as it is done) and the per-layer summary."""
    from engine.analysis.stats import compute_stats

    return compute_stats(original, quantized, bins=bins, reporter=reporter, on_tensor=reporter.emit)
