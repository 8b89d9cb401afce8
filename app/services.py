"""The engine as the views see it: typed calls and dataclass results, in one place.

Views import the engine only through this module (tests/test_layering.py checks), so what the app asks of
the engine can be read here in one go. Functions that take a ``reporter`` run in a worker thread
(:func:`app.jobs.run_in_thread`), never on the UI thread; streamed pieces go to ``reporter.emit``.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

from engine.analysis.compare import token_pieces  # noqa: F401  (the text each generated token added)
from engine.analysis.stats import LayerSummary, StatsReport, TensorStats, layer_of  # noqa: F401  (Analysis reads these)
from engine.core.errors import NibbleError  # noqa: F401  (views catch it)
from engine.core.units import format_kld, human_bytes  # noqa: F401  (the one byte and KLD formatters)
from engine.estimate import AwqCost, Estimate, ModelPlan, awq_cost, estimate, load_plan  # noqa: F401
from engine.estimate import context_choices  # noqa: F401  (the wizard's context list)
from engine.estimate.timing import ImatrixTime, imatrix_time, measured_flops, probe_flops  # noqa: F401
from engine.gguf.imatrix import WINDOW_TOKENS  # noqa: F401  (what importance matrix windows hold)
from engine.pipelines.queue import output_name  # noqa: F401  (the one rule for naming outputs)
from engine.gguf.types import QuantType, quant_types
from engine.hub import (  # noqa: F401
    CachedModel,
    HubModel,
    converted_families,
    download_model,
    list_cached_models,
    model_details,
    requantizable_gguf,
    search_models,
)
from engine.models.library import Entry as LibraryEntry
from engine.models import resolve as _resolve
from engine.models.resolve import AWQ, GGUF, MODEL_KINDS, ORIGINAL, model_kind  # noqa: F401
from engine.runtime.chat import ChatSettings, Conversation, ReplyFigures  # noqa: F401
from engine.runtime.conversations import (  # noqa: F401  (Chat saves and reopens conversations)
    SavedConversation,
    delete_conversation,
    list_conversations,
    load_conversation,
    save_conversation,
)

_resolve.NAMES_FROM_CHILD = True  # reading a model's plan in a worker thread must not import torch here

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


def library_file() -> pathlib.Path:
    """The library's file, which the app and the `nibble` command both write."""
    from engine.models import library

    return library.library_path()


def library_entry(path: str) -> LibraryEntry | None:
    """The library's entry for ``path`` (None: not in the library)."""
    from engine.models import library

    return library.default().find_path(path)


def forget_model(path: str) -> None:
    """Remove ``path``'s library entry; its files stay where they are. An original whose outputs the library
    still lists is kept (they would lose their link to it): a one-line NibbleError says so."""
    from engine.models import library

    lib = library.default()
    entry = lib.find_path(path)
    if entry is None:
        return
    made = [e for e in lib.outputs_of(entry.id) if not e.missing]
    if made:
        names = ", ".join(pathlib.Path(e.path).name for e in made[:3]) + (", …" if len(made) > 3 else "")
        raise NibbleError(f"{entry.name} is the original of {names}; forget or delete those first, "
                          "so that they keep their original")
    lib.remove_entry(entry.id)


def why_not_deletable(path: str) -> str | None:
    """Why Nibble will not delete ``path``'s files (None: it will, after asking)."""
    from engine.models import library

    lib = library.default()
    entry = lib.find_path(path)
    if entry is None:
        return f"{pathlib.Path(path).name} is not in Nibble's library; Nibble deletes only the outputs it made"
    return lib.deletable(entry)


def delete_model(path: str) -> pathlib.Path:
    """Delete an output Nibble made (its file or AWQ folder) and its library entry."""
    from engine.models import library

    lib = library.default()
    entry = lib.find_path(path)
    if entry is None:
        raise NibbleError(f"{path} is not in Nibble's library; Nibble deletes only the outputs it made")
    return lib.delete_output(entry.id)


# -- handing outputs on: the Hub, Ollama, LM Studio ------------------------------------------------


def parse_split_size(text: str) -> int:
    """A split size as typed ("50GB", "3900MiB", bytes); a NibbleError naming the split size otherwise."""
    from engine.core.units import parse_size

    return parse_size(text, "split size")


def publish(path: str, repo_id: str, *, private: bool, split_bytes: int, reporter):
    """Upload one output with its model card to ``repo_id``, with the Hub token the user saved (never shown).
    Returns what was published (``url``, ``files``, ``created``)."""
    from huggingface_hub.utils import disable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    from engine.pipelines.publish import publish as run

    hf_logging.set_verbosity_error()  # Nibble says what happened, once
    disable_progress_bars()
    return run([path], repo_id, private=private, split_bytes=split_bytes, reporter=reporter)


def use_in_ollama(path: str):
    """Write a Modelfile beside the GGUF and import it into Ollama when installed; ``.message`` says which."""
    from engine.pipelines.handoff import use_in_ollama as run

    return run(path)


def use_in_lmstudio(path: str):
    """Place the GGUF in LM Studio's models folder (a link, or a copy); ``.message`` says where."""
    from engine.pipelines.handoff import use_in_lmstudio as run

    return run(path)


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
    from engine.models.calibration import calibration_file, count_tokens
    from engine.models.resolve import resolve_model_path

    src = resolve_model_path(model)
    return CalibrationText(str(calibration_file(path or None, src)), count_tokens(src, path or None))


def fit_samples(tokens: int, samples: int, seqlen: int) -> int:
    from engine.models.calibration import fit_samples as fit

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


# -- the best mix for a size ------------------------------------------------------------------------

@dataclass(frozen=True)
class MixPreview:
    """The mix for a budget before anything is written: its exact file and predicted KL divergence, beside
    llama.cpp's uniform types of a similar size (predicted by the same measurement)."""

    budget: int
    file_bytes: int
    bits_per_weight: float
    predicted_kld: float
    uniform: tuple[tuple[str, int, float], ...]  # (type, file bytes, predicted KLD), smallest first
    type_counts: dict[str, int]  # tensors per type


def mix_size_range(plan: ModelPlan) -> tuple[int, int]:
    """The smallest and largest file a mix of this model can be (arithmetic only)."""
    from engine.estimate.mix import size_range

    return size_range(plan)


def mix_fitting_budget(plan: ModelPlan, machine, *, ctx: int, kv_type: str, gpu_layers: int) -> int | None:
    """The largest mix that runs on this machine at these settings (arithmetic only)."""
    from engine.estimate.mix import fitting_budget

    return fitting_budget(plan, machine, ctx=ctx, kv_type=kv_type, gpu_layers=gpu_layers)


def preview_mix(model: str, budget: int, reporter, *, calibration: str | None = None) -> MixPreview:
    """Measure the model once (cached for later previews and the quantization) and choose the mix."""
    from engine.estimate.mix import describe
    from engine.pipelines.mixed import plan_mix

    plan, mix, profile = plan_mix(model, target_size=int(budget), calibration=calibration, reporter=reporter)
    d = describe(plan, mix, profile.kld)
    return MixPreview(d["target_bytes"], d["file_bytes"], d["bits_per_weight"], d["predicted_kld"],
                      tuple((u["type"], u["file_bytes"], u["predicted_kld"]) for u in d["uniform"]),
                      {k: v["tensors"] for k, v in d["type_counts"].items()})


def check_mix(original: str, mix_file: str, reporter, *, calibration: str | None = None):
    """Measured KLD of a written mix against the uniform type of its budget (:class:`MixCheck`)."""
    from engine.pipelines.mix_check import check_mix as run

    return run(original, mix_file, calibration=calibration, reporter=reporter)


# -- chat ------------------------------------------------------------------------------------------


def open_model(path: str, **options):
    """Load a model for generation (GGUF through llama.cpp, originals and AWQ through transformers)."""
    from engine.runtime import open_runtime

    # The app may load an original model through torch at any time: on GPU builds of llama.cpp a GGUF
    # then runs in a child process (see engine.core.llama).
    options.setdefault("share_with_torch", True)
    return open_runtime(path, **options)


AUTO_GPU_LAYERS = -1  # every layer on the GPU where the build and the machine have one, else none


@dataclass(frozen=True)
class LoadedModel:
    """What Chat has loaded, as its status line shows it."""

    path: str
    name: str
    kind: str
    device: str  # where it runs: "cpu", "gpu", "cuda", "mps"...
    context: int  # the context it was opened with (a GGUF's training context caps what was asked)
    gpu_layers: int  # as asked: AUTO_GPU_LAYERS, 0 (CPU only) or a number of layers
    notices: tuple[str, ...] = ()


def load_chat_model(path: str, *, gpu_layers: int = AUTO_GPU_LAYERS, context: int = 4096):
    """Open a model for Chat with its loading settings: ``gpu_layers`` (GGUF: layers offloaded to the GPU;
    originals and AWQ run on the GPU unless it is 0) and ``context`` (tokens). Runs in a worker thread."""
    kind = kind_of(path)
    if kind == GGUF:
        from engine.core.llama import gpu_build

        if gpu_layers == AUTO_GPU_LAYERS:
            options = {"device": "gpu", "gpu_layers": None} if gpu_build() else {"device": "cpu", "gpu_layers": 0}
        else:
            options = {"device": "gpu" if gpu_layers else "cpu", "gpu_layers": gpu_layers}
    else:
        gpu = gpu_layers != 0
        if gpu_layers == AUTO_GPU_LAYERS:
            import torch

            mps = getattr(torch.backends, "mps", None)
            gpu = torch.cuda.is_available() or bool(mps and mps.is_available())
        options = {"device": "gpu" if gpu else "cpu"}
    return open_model(path, n_ctx=context, **options)


def loaded_model(runtime, gpu_layers: int) -> LoadedModel:
    return LoadedModel(str(runtime.path), runtime.name, runtime.kind, str(runtime.device), int(runtime.n_ctx),
                       gpu_layers, tuple(runtime.notices))


def context_in_use(runtime) -> int:
    """Tokens of context the generation under way (or the last one) holds: its prompt and what it wrote."""
    gen = runtime.last_generation
    return int(gen.prompt_tokens) + len(gen.token_ids)


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
