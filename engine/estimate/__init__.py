"""Live estimate of file size and memory for each quant type.

Read the headers once, then recompute freely (the GUI does it on every change)::

    plan = load_plan("path/to/model")          # slow part: headers only
    est = estimate(plan, "Q4_K_M", ctx=4096, kv_type="f16", gpu_layers=0, machine=probe_machine("out"))
    ests = estimate_all(plan, ctx=8192)

File sizes and per-tensor types are exact (they follow the quantizer's own rules). Weights and KV cache
are exact sums; compute buffers, runtime overhead and quantizer memory are estimated. Each part of the
breakdown says which it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.core.errors import NibbleError
from engine.estimate.file_size import FileLayout, layout, source_gguf_bytes
from engine.core.devices import Machine, probe_machine
from engine.estimate.memory import (KV_TYPES, Part, QuantizeCost, RunMemory, kv_cache_bytes, quantize_cost, run_memory,
                                    weights_by_layer)
from engine.estimate.plan import ModelPlan, PlanTensor
from engine.estimate.plan import load_plan as _read_plan
from engine.estimate.tensor_types import file_types, parse_file_type

__all__ = [
    "AwqCost", "COMMON_TYPES", "DEFAULT_CTX", "context_choices", "default_context", "Estimate", "Fit", "FileLayout", "KV_TYPES", "Machine", "ModelPlan", "Part", "PlanTensor",
    "QuantizeCost", "RunMemory", "awq_cost", "estimate", "estimate_all", "file_types", "kv_cache_bytes",
    "load_plan", "prepare", "probe_machine", "source_gguf_bytes", "TIGHT_MARGIN",
]

# "tight": it fits, with under this fraction of the free memory (RAM or VRAM) to spare.
TIGHT_MARGIN = 0.2

# Types shown by default (``--all`` shows every file type llama.cpp can write).
COMMON_TYPES = ("Q2_K", "Q3_K_M", "Q4_0", "IQ4_XS", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
_CTX_STEPS = (131072, 65536, 32768, 16384, 8192, 4096, 2048, 1024, 512)
# The context assumed when none is given: llama.cpp's usual, unless the model was trained on less.
DEFAULT_CTX = 4096


def default_context(plan: ModelPlan) -> int:
    """The context to assume when none is given: :data:`DEFAULT_CTX`, or the trained context when shorter."""
    trained = plan.n_ctx_train or DEFAULT_CTX
    return min(DEFAULT_CTX, trained)


def context_choices(plan: ModelPlan, beyond: int = 2) -> list[tuple[int, bool]]:
    """Contexts to offer for ``plan``: powers of two up to its trained context, the trained context itself,
    then ``beyond`` doublings past it, each as (tokens, beyond training)."""
    trained = plan.n_ctx_train or DEFAULT_CTX
    out = [(c, False) for c in sorted(_CTX_STEPS) if c < trained]
    out.append((trained, False))
    c = trained
    for _ in range(beyond):
        c *= 2
        out.append((c, True))
    return out


@dataclass(frozen=True)
class Fit:
    """Whether it fits this machine, why not, and the largest setting that does.

    ``suggestion`` is a dict of changed settings (``ctx``, ``kv_type``, ``gpu_layers`` or ``type``) or None;
    ``suggestion_text`` says it in words. ``verdict`` is what running it comes to: "fits", "tight" (fits
    with under :data:`TIGHT_MARGIN` of the free RAM or VRAM to spare) or "no".
    """

    fits: bool
    run_fits: bool
    quantize_fits: bool
    problems: tuple[str, ...]
    suggestion: dict | None
    suggestion_text: str
    verdict: str = ""


@dataclass(frozen=True)
class AwqCost:
    """AWQ (4-bit GEMM layout) checkpoint size and the RAM calibration needs; estimated, see :func:`awq_cost`."""

    checkpoint_bytes: int
    calibration_peak_ram_bytes: int
    group_size: int
    n_samples: int
    seq_len: int
    exact: bool = False

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    """Everything about one quant type at one setting. ``fit`` is None when no machine was given."""

    type: str
    file_bytes: int
    file_exact: bool
    bits_per_weight: float
    n_params: int
    tensor_types: dict[str, tuple[int, int]]  # ggml type -> (tensors, bytes)
    ctx: int
    kv_type: str
    gpu_layers: int
    run: RunMemory
    quantize: QuantizeCost
    fit: Fit | None

    def to_json(self) -> dict:
        """The stable JSON shape scripts read (``nibble estimate --json``)."""
        return {
            "type": self.type,
            "file_bytes": self.file_bytes,
            "file_exact": self.file_exact,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "n_params": self.n_params,
            "tensor_types": {k: {"tensors": n, "bytes": b} for k, (n, b) in self.tensor_types.items()},
            "settings": {"ctx": self.ctx, "kv_type": self.kv_type, "gpu_layers": self.gpu_layers},
            "run": {
                "ram_bytes": self.run.ram_bytes, "vram_bytes": self.run.vram_bytes,
                "kv_cache_bytes": self.run.kv_cache_bytes, "ram_needed_bytes": self.run.ram_needed_bytes,
                "weights_bytes": self.run.weights_bytes,
                "compute_bytes": self.run.compute_bytes, "overhead_bytes": self.run.overhead_bytes,
                "parts": [asdict(p) for p in self.run.parts],
            },
            "quantize": {
                "peak_ram_bytes": self.quantize.peak_ram_bytes,
                "temp_disk_bytes": self.quantize.temp_disk_bytes,
                "output_disk_bytes": self.quantize.output_disk_bytes,
                "parts": [asdict(p) for p in self.quantize.parts],
            },
            "fits": None if self.fit is None else self.fit.fits,
            "fit": None if self.fit is None else asdict(self.fit),
        }


def load_plan(model) -> ModelPlan:
    """Read a model's headers (folder, .gguf or Hub id) and work out every file type's tensor types once,
    so that :func:`estimate` afterwards is arithmetic only. This is the slow part; call it off the UI thread."""
    plan = _read_plan(model)
    prepare(plan)
    return plan


def prepare(plan: ModelPlan) -> None:
    """Compute and cache the per-tensor types and file layout of every file type for ``plan``, with what each
    estimate sums over the tensors: the app's first estimates of every type, on its UI thread, are then
    arithmetic on a few numbers too."""
    for t in file_types():
        try:
            lay = layout(plan, parse_file_type(t))
        except NibbleError:  # a type llama.cpp cannot make for these shapes; estimate() says so if asked
            continue
        weights_by_layer(plan, lay)
        quantize_cost(plan, lay)


def _check(plan: ModelPlan, ctx: int, kv_type: str, gpu_layers: int) -> None:
    if kv_type not in KV_TYPES:
        raise NibbleError(f"KV cache type {kv_type!r} is unknown; choose one of {', '.join(KV_TYPES)}",
                          setting="KV cache type")
    if ctx < 1:
        raise NibbleError(f"context length {ctx}: the context must be at least 1 token", setting="context length")
    if gpu_layers < 0:
        raise NibbleError(f"GPU layers {gpu_layers}: must be 0 or more", setting="GPU layers")


def estimate(plan: ModelPlan, qtype: str, ctx: int = 4096, kv_type: str = "f16", gpu_layers: int = 0,
             machine: Machine | None = None, swa_full: bool = True) -> Estimate:
    """Size, memory and fit of ``plan`` quantized to ``qtype`` (e.g. "Q4_K_M"). Fast: arithmetic only.

    ``gpu_layers`` above the layer count means everything, output included, is offloaded.
    """
    _check(plan, ctx, kv_type, gpu_layers)
    ft = parse_file_type(qtype)
    lay = layout(plan, ft)
    run = run_memory(plan, lay, ctx, kv_type, gpu_layers, swa_full)
    cost = quantize_cost(plan, lay)
    fit = None
    if machine is not None:
        fit = _fit(plan, qtype, lay, run, cost, ctx, kv_type, gpu_layers, machine, swa_full)
    return Estimate(
        type=qtype.upper(), file_bytes=lay.file_bytes, file_exact=plan.metadata_exact,
        bits_per_weight=lay.bits_per_weight, n_params=lay.n_params, tensor_types=lay.type_counts,
        ctx=ctx, kv_type=kv_type, gpu_layers=gpu_layers, run=run, quantize=cost, fit=fit,
    )


def estimate_all(plan: ModelPlan, types: list[str] | tuple[str, ...] | None = None, **kwargs) -> list[Estimate]:
    """:func:`estimate` for each type (the common ones by default), in order of file size."""
    names = list(types) if types else list(COMMON_TYPES)
    # a bad setting is refused for every type alike: say so, rather than leave every type out of the list
    _check(plan, kwargs.get("ctx", 4096), kwargs.get("kv_type", "f16"), kwargs.get("gpu_layers", 0))
    out = []
    for t in names:
        try:
            out.append(estimate(plan, t, **kwargs))
        except NibbleError:
            if len(names) == 1:
                raise  # types llama.cpp cannot make for this model are left out of a list
    return sorted(out, key=lambda e: e.file_bytes)


def _run_fits(run: RunMemory, m: Machine) -> bool:
    return run.ram_needed_bytes <= m.free_ram_bytes and run.vram_bytes <= m.free_vram_bytes


def _verdict(run: RunMemory, m: Machine) -> str:
    if not _run_fits(run, m):
        return "no"
    keep = 1 - TIGHT_MARGIN
    if run.ram_needed_bytes > keep * m.free_ram_bytes or (run.vram_bytes and run.vram_bytes > keep * m.free_vram_bytes):
        return "tight"
    return "fits"


def _fit(plan, qtype, lay, run, cost, ctx, kv_type, gpu_layers, m: Machine, swa_full) -> Fit:
    problems = []
    gib = 1024 ** 3
    if run.ram_needed_bytes > m.free_ram_bytes:
        problems.append(f"running needs {run.ram_needed_bytes / gib:.1f} GiB RAM, {m.free_ram_bytes / gib:.1f} GiB free")
    if run.vram_bytes > m.free_vram_bytes:
        problems.append(f"running needs {run.vram_bytes / gib:.1f} GiB VRAM, {m.free_vram_bytes / gib:.1f} GiB free")
    disk = cost.temp_disk_bytes + cost.output_disk_bytes
    q_ok = True
    if disk > m.free_disk_bytes:
        q_ok = False
        problems.append(f"quantizing needs {disk / gib:.1f} GiB disk at {m.disk_path}, "
                        f"{m.free_disk_bytes / gib:.1f} GiB free")
    if cost.peak_ram_bytes > m.free_ram_bytes:
        q_ok = False
        problems.append(f"quantizing needs {cost.peak_ram_bytes / gib:.1f} GiB RAM, "
                        f"{m.free_ram_bytes / gib:.1f} GiB free")
    r_ok = _run_fits(run, m)
    suggestion, text = None, ""
    if not r_ok:
        suggestion, text = _suggest(plan, qtype, lay, ctx, kv_type, gpu_layers, m, swa_full)
    elif m.free_vram_bytes and gpu_layers <= plan.n_layer:
        # It fits; say how many layers the GPU could take.
        best = _max_gpu_layers(plan, lay, ctx, kv_type, m, swa_full)
        if best > gpu_layers:
            suggestion, text = {"gpu_layers": best}, f"up to {best} GPU layers fit"
    return Fit(fits=r_ok and q_ok, run_fits=r_ok, quantize_fits=q_ok, problems=tuple(problems),
               suggestion=suggestion, suggestion_text=text, verdict=_verdict(run, m))


def _max_gpu_layers(plan, lay, ctx, kv_type, m, swa_full) -> int:
    best = -1
    for g in range(plan.n_layer + 1, -1, -1):
        if _run_fits(run_memory(plan, lay, ctx, kv_type, g, swa_full), m):
            best = g
            break
    return best


def _suggest(plan, qtype, lay, ctx, kv_type, gpu_layers, m: Machine, swa_full):
    """The largest setting that fits: more GPU layers, then a shorter context, a smaller KV type, a smaller
    quant type — the first change that is enough. GPU layers asked for on a machine without a free GPU
    are the first thing to drop."""
    if gpu_layers and not m.free_vram_bytes:
        if _run_fits(run_memory(plan, lay, ctx, kv_type, 0, swa_full), m):
            return {"gpu_layers": 0}, "no GPU memory here: use 0 GPU layers"
        suggestion, text = _suggest(plan, qtype, lay, ctx, kv_type, 0, m, swa_full)
        if suggestion is None:
            return None, text
        return {"gpu_layers": 0, **suggestion}, f"no GPU memory here: use 0 GPU layers and {text.removeprefix('use ')}"
    if m.free_vram_bytes:
        g = _max_gpu_layers(plan, lay, ctx, kv_type, m, swa_full)
        if g > gpu_layers:
            return {"gpu_layers": g}, f"offload {g} layers to the GPU"
    for c in _CTX_STEPS:
        if c < ctx and _run_fits(run_memory(plan, lay, c, kv_type, gpu_layers, swa_full), m):
            return {"ctx": c}, f"use a context of {c} tokens"
    for kv in ("q8_0", "q4_0"):
        if KV_TYPES[kv].value != KV_TYPES[kv_type].value and _kv_smaller(kv, kv_type) and \
                _run_fits(run_memory(plan, lay, ctx, kv, gpu_layers, swa_full), m):
            return {"kv_type": kv}, f"use a {kv} KV cache"
    candidates = [(plan._cache[("layout", parse_file_type(t))], t) for t in file_types()
                  if t != "F32" and not t.startswith(("IQ1", "IQ2", "TQ", "Q1"))
                  and ("layout", parse_file_type(t)) in plan._cache]
    candidates.sort(key=lambda c: -c[0].file_bytes)
    for lay2, t in [(l2, t) for l2, t in candidates if l2.file_bytes < lay.file_bytes]:
        if _run_fits(run_memory(plan, lay2, ctx, kv_type, gpu_layers, swa_full), m):
            return {"type": t}, f"use {t}"
    return None, "nothing fits this machine at any setting"


def _kv_smaller(a: str, b: str) -> bool:
    order = ["q4_0", "q8_0", "f16", "bf16", "f32"]
    return order.index(a) < order.index(b)


def awq_cost(plan: ModelPlan, group_size: int = 128, n_samples: int = 128, seq_len: int = 512) -> AwqCost:
    """AWQ (4-bit GEMM layout) checkpoint size and calibration memory — estimated.

    Checkpoint: each decoder linear becomes int32 ``qweight`` (4 bits a weight), int32 ``qzeros`` and fp16
    ``scales`` per group; everything else stays 16-bit. Calibration runs one decoder layer at a time on
    ``n_samples`` x ``seq_len`` tokens: the 16-bit model, one layer in F32, and that layer's inputs,
    outputs, and o_proj's inputs or then down_proj's for all samples (other activations are made a chunk at
    a time).
    """
    ckpt = 0
    largest_layer = 0
    layer_bytes: dict[int, int] = {}
    for t in plan.tensors:
        if t.layer >= 0 and len(t.ne) == 2 and t.name.endswith(".weight") and "norm" not in t.name \
                and "gate_inp" not in t.name and t.ne[0] % group_size == 0:
            n_in, n_out = t.ne
            ckpt += n_in * n_out // 2 + (n_in // group_size) * n_out // 2 + (n_in // group_size) * n_out * 2
        else:
            ckpt += t.n_elements * 2
        if t.layer >= 0:
            layer_bytes[t.layer] = layer_bytes.get(t.layer, 0) + t.n_elements * 4
    largest_layer = max(layer_bytes.values(), default=0)
    tokens = n_samples * seq_len
    act = tokens * 4 * (2 * plan.n_embd + max(plan.n_head * plan.head_dim_v, plan.n_ff))
    model16 = plan.n_params * 2
    peak = model16 + largest_layer + act + 600 * 1024 * 1024  # plus Python, torch and transformers
    return AwqCost(checkpoint_bytes=ckpt, calibration_peak_ram_bytes=peak, group_size=group_size,
                   n_samples=n_samples, seq_len=seq_len)
