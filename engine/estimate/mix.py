"""The best mix for a size: which type each tensor gets so that the predicted KL divergence is lowest and the
file is at most the budget.

Each quantized tensor is an item with one option per candidate type (exact bytes, padded as in the file;
predicted KL divergence from the profile, ``engine.gguf.mixed``). Every tensor starts at its smallest
option; upgrades along each tensor's lower convex hull are then taken in order of KL divergence saved per
byte while they fit, and a last pass spends what is left on any single upgrade that still fits. The file
size is the exact layout of ``engine.estimate.file_size``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from engine.core.errors import NibbleError
from engine.core.units import human_bytes, parse_size
from engine.estimate.file_size import FileLayout, layout, layout_for_types, pad
from engine.estimate.plan import ModelPlan
from engine.estimate.tensor_types import QT, allows_quantization, choose_types, parse_file_type, tensor_bytes
from engine.gguf.mixed import candidates_for

@dataclass(frozen=True)
class Mix:
    """A chosen mix: each quantized tensor's type, the exact file, and the predicted KL divergence."""

    tensor_types: dict[str, str]
    layout: FileLayout
    predicted_kld: float
    budget: int

    @property
    def file_bytes(self) -> int:
        return self.layout.file_bytes


def quantized_tensors(plan: ModelPlan) -> list[int]:
    """Indices of ``plan.tensors`` the quantizer may give a type to."""
    return [i for i, t in enumerate(plan.tensors) if allows_quantization(t.name, len(t.ne))]


def candidate_map(plan: ModelPlan) -> dict[str, tuple[str, ...]]:
    return {plan.tensors[i].name: candidates_for(plan.tensors[i].ne[0]) for i in quantized_tensors(plan)}


def _types(plan: ModelPlan, chosen: dict[str, str]) -> list:
    return [QT[chosen[t.name]] if t.name in chosen else QT[t.src_type] for t in plan.tensors]


def mix_layout(plan: ModelPlan, chosen: dict[str, str]) -> FileLayout:
    """The exact file for ``chosen`` (tensor -> type; tensors not named keep their unquantized type)."""
    return layout_for_types(plan, _types(plan, chosen))


def size_range(plan: ModelPlan) -> tuple[int, int]:
    """Smallest and largest file a mix can make: every tensor at its smallest candidate, or all F16."""
    hit = plan._cache.get("size_range")
    if hit is None:
        hit = plan._cache["size_range"] = _size_range(plan)
    return hit


def _size_range(plan: ModelPlan) -> tuple[int, int]:
    cands = candidate_map(plan)
    lo = {n: min(c, key=lambda t: tensor_bytes(QT[t], _ne(plan, n))) for n, c in cands.items()}
    return layout_for_types(plan, _types(plan, lo)).file_bytes, layout_for_types(plan, _types(plan, {n: "F16" for n in cands})).file_bytes


def _ne(plan: ModelPlan, name: str):
    return next(t.ne for t in plan.tensors if t.name == name)


def budget_for(plan: ModelPlan, target_size: str | int | None = None, target_bpw: float | None = None) -> int:
    """The byte budget from ``--target-size`` or ``--target-bpw``, checked against what a mix can reach."""
    if (target_size is None) == (target_bpw is None):
        raise NibbleError("give one of a target size or target bits per weight", setting="target size")
    lo, hi = size_range(plan)
    if target_bpw is not None:
        if not 0 < float(target_bpw) <= 64:
            raise NibbleError(f"target bits per weight {target_bpw}: give bits per weight, e.g. 4.5",
                              setting="target bits per weight")
        header = layout_for_types(plan, _types(plan, {})).header_bytes
        budget = header + int(float(target_bpw) * plan.n_params / 8)
        what, setting = f"target bits per weight {target_bpw}", "target bits per weight"
    else:
        budget = parse_size(target_size, "target size") if isinstance(target_size, str) else int(target_size)
        what, setting = f"target size {target_size}", "target size"
    if not lo <= budget <= hi:
        bpw = lambda b: (b - layout_for_types(plan, _types(plan, {})).header_bytes) * 8 / plan.n_params  # noqa: E731
        raise NibbleError(f"{what} is outside what a mix of this model can be: {human_bytes(lo)} ({lo} bytes, "
                          f"{bpw(lo):.2f} bpw) to {human_bytes(hi)} ({hi} bytes, F16, {bpw(hi):.2f} bpw)", setting=setting)
    return budget


def uniform_kld(plan: ModelPlan, kld: dict[str, dict[str, float]], qtype: str) -> float | None:
    """Predicted KL divergence of llama.cpp's own mixture for ``qtype`` (None where a type is not profiled)."""
    types = choose_types(plan, parse_file_type(qtype))
    total = 0.0
    for t, qt in zip(plan.tensors, types):
        if t.name in kld:
            if qt.name not in kld[t.name]:
                return None
            total += kld[t.name][qt.name]
    return total


def search(plan: ModelPlan, kld: dict[str, dict[str, float]], budget: int) -> Mix:
    """The mix of least predicted KL divergence whose file is at most ``budget`` bytes."""
    cands = candidate_map(plan)
    missing = [n for n in cands if n not in kld]
    if missing:
        raise NibbleError(f"the measured profile lacks {missing[0]} (and {len(missing) - 1} more); measure it again")
    opts: dict[str, list[tuple[int, float, str]]] = {}
    for name, types in cands.items():
        ne = _ne(plan, name)
        o = sorted({(pad(tensor_bytes(QT[t], ne)), kld[name][t], t) for t in types if t in kld[name]})
        opts[name] = o
    fixed = layout_for_types(plan, _types(plan, {n: o[0][2] for n, o in opts.items()}))
    slack = budget - fixed.file_bytes
    if slack < 0:
        raise NibbleError(f"target size {budget} bytes is below the smallest mix ({fixed.file_bytes} bytes)",
                          setting="target size")
    choice = {n: 0 for n in opts}
    hulls = {n: _hull(o) for n, o in opts.items()}

    def push(heap, n: str, k: int) -> None:  # the upgrade from hull point k to k + 1, by KL saved per byte
        h, o = hulls[n], opts[n]
        if k + 1 < len(h):
            a, b = o[h[k]], o[h[k + 1]]
            heapq.heappush(heap, (-(a[1] - b[1]) / max(1, b[0] - a[0]), n, k))

    heap: list = []
    for n in hulls:
        push(heap, n, 0)
    while heap:
        _, n, k = heapq.heappop(heap)
        a, b = opts[n][hulls[n][k]], opts[n][hulls[n][k + 1]]
        if b[0] - a[0] <= slack:
            slack -= b[0] - a[0]
            choice[n] = hulls[n][k + 1]
            push(heap, n, k + 1)
    while True:  # spend what is left: the single upgrade saving most that still fits
        best = None
        for n, o in opts.items():
            cur = o[choice[n]]
            for j, (b, e, _t) in enumerate(o):
                if e < cur[1] and b - cur[0] <= slack and (best is None or cur[1] - e > best[0]):
                    best = (cur[1] - e, n, j, b - cur[0])
        if best is None:
            break
        _, n, j, extra = best
        choice[n] = j
        slack -= extra
    chosen = {n: opts[n][choice[n]][2] for n in opts}
    lay = layout_for_types(plan, _types(plan, chosen))
    assert lay.file_bytes <= budget, (lay.file_bytes, budget)
    return Mix(tensor_types=chosen, layout=lay, predicted_kld=sum(opts[n][choice[n]][1] for n in opts), budget=budget)


def _hull(o: list[tuple[int, float, str]]) -> list[int]:
    """Indices of the lower convex hull of (bytes, kld), from the smallest option on."""
    pts = [0]
    for j in range(1, len(o)):
        if o[j][1] >= o[pts[-1]][1]:
            continue  # more bytes, no less error: never worth it
        while len(pts) >= 2:
            a, b = o[pts[-2]], o[pts[-1]]
            # b lies above the line from a to o[j]: drop it
            if (b[1] - a[1]) * (o[j][0] - a[0]) >= (o[j][1] - a[1]) * (b[0] - a[0]):
                pts.pop()
            else:
                break
        pts.append(j)
    return pts


def describe(plan: ModelPlan, mix: Mix, kld: dict[str, dict[str, float]], *, ctx: int = 4096, kv_type: str = "f16",
             gpu_layers: int = 0) -> dict:
    """The mix as ``nibble estimate --target-size --json`` prints it: exact file, each tensor's type, predicted
    KL divergence beside llama.cpp's uniform types of a similar size, and the memory to run it."""
    from engine.estimate.memory import run_memory
    from engine.estimate.tensor_types import file_types

    run = run_memory(plan, mix.layout, ctx, kv_type, gpu_layers, True)
    uniform = []
    for t in file_types():
        try:
            lay = layout(plan, parse_file_type(t))
        except NibbleError:
            continue
        if 0.6 * mix.budget <= lay.file_bytes <= 1.25 * mix.budget and (k := uniform_kld(plan, kld, t)) is not None:
            uniform.append({"type": t, "file_bytes": lay.file_bytes, "predicted_kld": k})
    return {
        "target_bytes": mix.budget, "file_bytes": mix.file_bytes, "file_exact": plan.metadata_exact,
        "bits_per_weight": round(mix.layout.bits_per_weight, 4), "predicted_kld": mix.predicted_kld,
        "type_counts": {k: {"tensors": n, "bytes": b} for k, (n, b) in mix.layout.type_counts.items()},
        "tensor_types": dict(mix.layout.types),
        "uniform": sorted(uniform, key=lambda u: u["file_bytes"]),
        "run": {"ram_bytes": run.ram_bytes, "vram_bytes": run.vram_bytes, "kv_cache_bytes": run.kv_cache_bytes,
                "settings": {"ctx": ctx, "kv_type": kv_type, "gpu_layers": gpu_layers}},
    }


def fitting_budget(plan: ModelPlan, machine, *, ctx: int, kv_type: str = "f16", gpu_layers: int = 0) -> int | None:
    """The largest file a mix may be and still run on ``machine`` at ``ctx`` with the estimate's margin to
    spare (what "fits", not "tight", means there); None when even the smallest mix does not.

    The KV cache, compute buffers and overhead do not depend on the types; the weights in RAM and on the GPU
    scale with the file, measured on the F16 layout (the largest a mix can be)."""
    from engine.estimate import TIGHT_MARGIN
    from engine.estimate.memory import run_memory

    lo, hi = size_range(plan)
    full = layout_for_types(plan, _types(plan, {n: "F16" for n in candidate_map(plan)}))
    run = run_memory(plan, full, ctx, kv_type, gpu_layers)
    header = full.header_bytes
    keep = 1 - TIGHT_MARGIN
    w_ram = sum(p.bytes for p in run.parts if p.name == "weights (memory-mapped file)")
    w_vram = sum(p.bytes for p in run.parts if p.name == "weights on GPU")
    scales = [(keep * machine.free_ram_bytes - (run.ram_needed_bytes - w_ram)) / w_ram if w_ram else float("inf")]
    if w_vram:
        scales.append((keep * machine.free_vram_bytes - (run.vram_bytes - w_vram)) / w_vram)
    budget = header + int(min(min(scales), 1.0) * (full.file_bytes - header))
    return None if budget < lo else min(budget, hi)
