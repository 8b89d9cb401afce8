"""What a mix bought, measured: the mixed file against llama.cpp's uniform type that fits the same budget.

Both files are quantized with the importance matrix the mix's profile measured (the uniform type gets the
same help the mix had), and both are evaluated against the original on the same text, the original opened
once (:func:`engine.analysis.evaluate.evaluate`, llama-perplexity's method). The uniform file is a temporary beside the mix, removed
at the end. The wizard's done page and ``benchmarks/mixed_quality.py``-style checks call this.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import NibbleError
from engine.core.progress import Reporter

# llama.cpp's uniform types a user picks by size, smallest first
UNIFORM_TYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_XS", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
                 "Q8_0")


@dataclass(frozen=True)
class MixCheck:
    """Measured KL divergence (mean, 99th percentile) and same-top-token of the mix and of the uniform type."""

    uniform_type: str
    mix_bytes: int
    uniform_bytes: int
    mix_kld: float
    uniform_kld: float
    mix_kld_p99: float
    uniform_kld_p99: float
    mix_top1: float
    uniform_top1: float
    tokens: int

    @property
    def ratio(self) -> float:
        """The mix's KL divergence as a fraction of the uniform type's (below 1: the mix is better)."""
        return self.mix_kld / self.uniform_kld if self.uniform_kld > 0 else float("inf")


def uniform_for_budget(plan, budget: int) -> tuple[str, int]:
    """The largest of llama.cpp's uniform types whose file fits ``budget`` bytes: what a user would pick
    without a mix (:data:`UNIFORM_TYPES`)."""
    from engine.estimate.file_size import layout
    from engine.estimate.tensor_types import parse_file_type

    best = None
    for qtype in UNIFORM_TYPES:
        try:
            size = layout(plan, parse_file_type(qtype)).file_bytes
        except (NibbleError, KeyError, ValueError):
            continue
        if size <= budget and (best is None or size > best[1]):
            best = (qtype, size)
    if best is None:
        raise NibbleError(f"no uniform type fits {budget} bytes; nothing to compare the mix with",
                          setting="target size")
    return best


def check_mix(original, mix_file, *, uniform_type: str | None = None, calibration=None, windows: int = 16,
              ctx: int = 512, max_chunks: int | None = None, threads: int | None = None,
              reporter: Reporter | None = None) -> MixCheck:
    """Quantize ``original`` to the uniform type of the mix's budget (or ``uniform_type``) with the profile's
    importance matrix, and measure both files against ``original``."""
    from engine.analysis.evaluate import evaluate
    from engine.estimate import load_plan
    from engine.gguf.mixed import load_profile, load_recipe, profile_dir, recipe_path_for
    from engine.gguf.quantize import quantize
    from engine.pipelines.mixed import _calibration, _check_source
    from engine.runtime import open_runtime

    reporter = reporter or Reporter()
    mix_file = Path(mix_file)
    if not mix_file.is_file():
        raise NibbleError(f"{mix_file}: no such file; quantize the mix first", setting="output path")
    src = _check_source(original)
    plan = load_plan(src)
    rpath = recipe_path_for(mix_file)
    if not rpath.is_file():
        raise NibbleError(f"{mix_file}: no recipe beside it ({rpath.name}); this check is for a mix Nibble wrote",
                          setting="output path")
    recipe = load_recipe(rpath)
    budget = recipe.target_bytes or recipe.file_bytes
    if uniform_type is None:
        uniform_type, _ = uniform_for_budget(plan, budget)
    cal = _calibration(original, calibration, None)
    profile = load_profile(profile_dir(src, cal, windows))
    with tempfile.TemporaryDirectory(dir=mix_file.parent, prefix=".nibble-check-") as tmp:
        uniform_file = Path(tmp) / f"{uniform_type}.gguf"
        reporter.progress(0, 3, f"quantizing the uniform {uniform_type} to compare with", stage="uniform")
        if profile is not None:
            quantize(src, uniform_type, uniform_file, imatrix=profile.imatrix, threads=threads, reporter=reporter)
        else:
            quantize(src, uniform_type, uniform_file, calibration=cal, threads=threads, reporter=reporter)
        reporter.check_cancel()
        reference = open_runtime(src, n_ctx=ctx, share_with_torch=True, threads=threads)
        try:
            results = []
            for i, (what, path) in enumerate((("the mix", mix_file), (uniform_type, uniform_file))):
                reporter.progress(i + 1, 3, f"measuring {what} against the original", stage="evaluate")
                results.append(evaluate(reference, path, ctx=ctx, max_chunks=max_chunks, threads=threads,
                                        share_with_torch=True, reporter=reporter))
        finally:
            reference.close()
        mix_bytes, uniform_bytes = mix_file.stat().st_size, uniform_file.stat().st_size
    reporter.progress(3, 3, "done", stage="evaluate")
    a, b = results
    return MixCheck(uniform_type, mix_bytes, uniform_bytes, a.kld_mean, b.kld_mean, a.kld_p99, b.kld_p99,
                    a.top1_agreement, b.top1_agreement, a.tokens)
