"""The Quantize wizard's calls: types, outputs, calibration text, estimates and the best mix for a size."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from engine.core.errors import NibbleError
from engine.estimate import Estimate, ModelPlan, estimate
from engine.pipelines.queue import output_name
from engine.gguf.types import QuantType, quant_types


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


def calibration_count_command(model: str, path: str | None) -> tuple[str, ...]:
    """The engine module and arguments that count the tokens of ``path`` (None or "": the text Nibble uses for
    ``model``) in a child process (``app.children.run_module_in_child``); seconds on big files. Its result is read
    with :func:`calibration_text`."""
    return ("engine.models.calibration", model, path or "")


def calibration_text(result: dict) -> CalibrationText:
    return CalibrationText(str(result["path"]), int(result["tokens"]))


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


def load_plan(model: str) -> ModelPlan:
    """The model's plan for the estimates, read in a worker thread, with the range of a mix's size worked out
    there too (tens of milliseconds of Python the UI thread would otherwise spend when the plan arrives)."""
    from engine.estimate import load_plan as read

    plan = read(model)
    mix_size_range(plan)
    return plan


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
