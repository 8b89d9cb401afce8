"""The best file for a size, end to end: measure (or read) the model's profile, choose each tensor's type
for the budget, quantize with llama.cpp's per-tensor overrides, check the file against the estimate and save
the recipe beside it. ``nibble quantize --target-size/--target-bpw/--recipe`` and ``nibble estimate
--target-size`` call these, and so does the app (through the CLI's child process)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import NibbleError
from engine.core.progress import Reporter


@dataclass
class MixedResult:
    output: Path
    recipe_path: Path
    file_bytes: int
    budget: int | None
    predicted_kld: float | None
    seconds: float
    profile_seconds: float
    type: str = "mix"
    tensor_types: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        counts: dict[str, int] = {}
        for t in self.tensor_types.values():
            counts[t] = counts.get(t, 0) + 1
        return {"output": str(self.output), "type": self.type, "file_bytes": self.file_bytes,
                "budget_bytes": self.budget, "predicted_kld": self.predicted_kld, "seconds": round(self.seconds, 3),
                "profile_seconds": round(self.profile_seconds, 3), "recipe": str(self.recipe_path),
                "tensor_types": counts}


def _calibration(model, calibration, imatrix) -> Path:
    from engine.models.demo import default_calibration_path
    from engine.models.source import resolve_model_path

    if imatrix and not calibration:
        raise NibbleError("a target size measures each tensor on calibration text, which a saved importance "
                          "matrix does not hold; give calibration text (or neither, for Nibble's text)",
                          setting="importance matrix")
    if calibration in (None, "default"):
        path = default_calibration_path(resolve_model_path(model))
    else:
        path = Path(calibration)
    if not path.is_file():
        raise NibbleError(f"calibration text {calibration}: file not found", setting="calibration text")
    return path


def _check_source(model) -> Path:
    from engine.models.source import resolve_model_path

    src = resolve_model_path(model)
    if src.is_file():
        raise NibbleError(f"{src}: a mix for a size is measured on the original model; give its Hugging Face "
                          "folder (or demo), not a GGUF file")
    return src


def plan_mix(model, *, target_size=None, target_bpw=None, calibration=None, imatrix=None, windows: int = 16,
             threads: int | None = None, reporter: Reporter | None = None, work_dir: Path | None = None):
    """(plan, mix, profile) for ``model`` at the budget: measures the profile unless it is cached.

    The budget is checked before anything is measured."""
    import tempfile

    from engine.estimate import load_plan
    from engine.estimate.mix import budget_for, candidate_map, search
    from engine.gguf.mixed import load_profile, measure_profile, profile_dir

    reporter = reporter or Reporter()
    src = _check_source(model)
    plan = load_plan(src)
    budget = budget_for(plan, target_size, target_bpw)
    cal = _calibration(model, calibration, imatrix)
    profile = load_profile(profile_dir(src, cal, windows))
    if profile is None:
        with tempfile.TemporaryDirectory(dir=work_dir, prefix=".nibble-mix-") as tmp:
            inter = _convert(src, Path(tmp) / "unquantized.gguf", reporter)
            profile = measure_profile(src, inter, cal, candidate_map(plan), windows=windows, threads=threads,
                                      reporter=reporter)
    return plan, search(plan, profile.kld, budget), profile


def _convert(src: Path, dest: Path, reporter: Reporter) -> Path:
    from engine.gguf.convert import convert_to_gguf
    from engine.models.source import open_source

    return convert_to_gguf(open_source(src), dest, reporter=reporter)


def quantize_mixed(model, out, *, target_size=None, target_bpw=None, recipe=None, calibration=None, imatrix=None,
                   windows: int = 16, threads: int | None = None, reporter: Reporter | None = None) -> MixedResult:
    """Quantize ``model`` to the best mix for ``target_size`` (bytes or '4.2GB') or ``target_bpw``, or to the
    types of a saved ``recipe``; writes ``out`` and ``out``'s ``.recipe.json``."""
    from engine.estimate import load_plan
    from engine.estimate.mix import candidate_map
    from engine.core.outputs import temp_path
    from engine.gguf.mixed import Recipe, file_type_for, load_profile, measure_profile, profile_dir, recipe_path_for
    from engine.gguf.quantize import _run_worker, check_quantize_args, find_type

    reporter = reporter or Reporter()
    started = time.perf_counter()
    if recipe is not None and (target_size is not None or target_bpw is not None):
        raise NibbleError("give a recipe or a target size, not both", setting="recipe")
    src = _check_source(model)
    plan = load_plan(src)
    if recipe is not None:
        chosen, budget, predicted, cal = _recipe_types(plan, recipe), None, None, None
        if calibration or not imatrix:
            cal = _calibration(model, calibration, None)
    else:
        from engine.estimate.mix import budget_for

        budget = budget_for(plan, target_size, target_bpw)  # a bad budget fails before any work
        cal = _calibration(model, calibration, imatrix)
    # the checks every GGUF quantization makes (output path, free space), at the size of the largest candidate
    out = check_quantize_args(model, "Q8_0", out, imatrix=None if cal else imatrix, calibration=cal,
                              threads=threads)["out"]
    inter = Path(os.path.abspath(temp_path(out, "unquantized")))
    part = Path(os.path.abspath(temp_path(out, "part")))
    profile_seconds = 0.0
    try:
        _convert(src, inter, reporter)
        reporter.check_cancel()
        job_imatrix = os.path.abspath(imatrix) if imatrix and not cal else None
        if recipe is None:
            from engine.estimate.mix import search

            profile = load_profile(profile_dir(src, cal, windows)) or measure_profile(
                src, inter, cal, candidate_map(plan), windows=windows, threads=threads, reporter=reporter)
            profile_seconds = 0.0 if profile.cached else profile.seconds
            mix = search(plan, profile.kld, budget)
            chosen, predicted = mix.tensor_types, mix.predicted_kld
            job_imatrix = os.path.abspath(profile.imatrix)
        from engine.estimate.mix import mix_layout

        lay = mix_layout(plan, chosen)
        ftype = find_type(file_type_for({k: b for k, (_n, b) in lay.type_counts.items()}))
        job = {"input": str(inter), "output": str(part), "ftype": ftype.ftype, "type": "mix", "threads": threads,
               "imatrix_file": job_imatrix, "calibration_file": None if job_imatrix or not cal else os.path.abspath(cal),
               "calibration_name": cal.name if cal else None, "tensor_types": chosen}
        _run_worker(job, reporter)
        _check_written(part, chosen, lay.file_bytes)
        os.replace(part, out)
    finally:
        inter.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    rec = Recipe(tensor_types=chosen, file_bytes=lay.file_bytes, target_bytes=budget, predicted_kld=predicted,
                 model={"name": plan.source, "arch": plan.arch, "n_params": plan.n_params},
                 calibration=cal.name if cal else None)
    rpath = rec.save(recipe_path_for(out))
    return MixedResult(output=out, recipe_path=rpath, file_bytes=lay.file_bytes, budget=budget, predicted_kld=predicted,
                       seconds=time.perf_counter() - started, profile_seconds=profile_seconds, tensor_types=chosen)


def _check_written(path: Path, chosen: dict[str, str], expected_bytes: int) -> None:
    """The file llama.cpp wrote has the recipe's types and the estimated size (a bug otherwise)."""
    import gguf

    size = path.stat().st_size
    if size != expected_bytes:
        raise RuntimeError(f"the mixed file is {size} bytes, the estimate said {expected_bytes}")
    got = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    wrong = [n for n, t in chosen.items() if got.get(n) != t]
    if wrong:
        raise RuntimeError(f"llama.cpp gave {wrong[0]} {got.get(wrong[0])}, the recipe {chosen[wrong[0]]}")


def _recipe_types(plan, recipe) -> dict[str, str]:
    """The recipe's types, checked against this model: same quantized tensors, types their rows allow."""
    from engine.estimate.mix import candidate_map
    from engine.gguf.mixed import Recipe, load_recipe

    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    cands = candidate_map(plan)
    where = f"recipe {recipe}" if not isinstance(recipe, Recipe) else "the recipe"
    extra = sorted(set(rec.tensor_types) - set(cands))
    missing = sorted(set(cands) - set(rec.tensor_types))
    if extra or missing:
        name = (extra or missing)[0]
        raise NibbleError(f"{where} was made for another model: {name} is "
                          f"{'not in this model' if extra else 'missing from the recipe'}; "
                          "use a recipe made from this model or its base", setting="recipe")
    for name, t in rec.tensor_types.items():
        if t not in cands[name]:
            raise NibbleError(f"{where}: {name} cannot be {t} in this model (its rows allow {', '.join(cands[name])})",
                              setting="recipe")
    return dict(rec.tensor_types)
