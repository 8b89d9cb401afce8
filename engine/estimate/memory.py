"""Memory to run a GGUF with llama.cpp, and memory and disk to make it.

Running: weights (memory-mapped file pages, plus a repacked copy of some types on CPU), the KV cache,
llama.cpp's compute buffers and the process's own overhead. The weights and the KV cache are exact sums
over tensors and layers; compute buffers and overhead are a model fitted to llama-cpp-python's measured
RSS (benchmarks/estimate_memory.py) and are labelled estimated.

Quantizing: the intermediate GGUF (exact size) on disk next to the output, and the peak RSS of the
converter and of llama.cpp's quantizer, which work one tensor at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf  # the estimate package reads it anyway; an import here runs for every tensor, slowly under Qt

from engine.estimate.file_size import FileLayout, source_gguf_bytes
from engine.estimate.plan import ModelPlan
from engine.estimate.tensor_types import QT, row_bytes

MiB = 1024 * 1024

KV_TYPES = {"f16": QT.F16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "f32": QT.F32, "bf16": QT.BF16}

# llama.cpp pads the context to a multiple of this many cells.
CTX_PAD = 256
# llama-cpp-python's default micro-batch (n_ubatch) and logical batch.
N_UBATCH = 512

# Fitted to llama-cpp-python 0.3.36 on CPU (see benchmarks/RESULTS.md, "Estimate"): Python with
# llama_cpp imported, then per vocabulary entry and per byte of tokenizer metadata (token and merge tables).
PROCESS_OVERHEAD = 42 * MiB
VOCAB_BYTES_PER_TOKEN = 200
VOCAB_BYTES_PER_METADATA_BYTE = 3.7


def _repacked_types() -> frozenset[str]:
    """Weight types llama.cpp's CPU backend copies into an interleaved layout on this kind of CPU."""
    import platform

    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return frozenset({"Q4_0", "Q4_K", "IQ4_NL", "Q5_K", "Q6_K", "Q8_0"})
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    types = {"Q4_0", "Q4_K", "IQ4_NL"}
    if "avx512f" in flags.split():
        types.add("Q2_K")
    return frozenset(types)


REPACKED_TYPES = _repacked_types()
# Peak RSS of the converter and quantizer processes besides the tensors they hold.
CONVERT_OVERHEAD = 400 * MiB
QUANTIZE_OVERHEAD = 64 * MiB


@dataclass(frozen=True)
class Part:
    """One line of a breakdown: what it is, how many bytes, where it lives, and whether it is exact."""

    name: str
    bytes: int
    exact: bool
    where: str = "ram"  # "ram", "vram" or "disk"
    note: str = ""


@dataclass(frozen=True)
class RunMemory:
    """Memory to run the quantized model at a given context, KV type and number of GPU layers.

    ``ram_bytes`` is the resident set (what a process monitor shows); ``ram_needed_bytes`` leaves out
    file pages the kernel can reclaim (the on-disk copy of weights that were repacked) and is what the
    fit verdict uses.
    """

    ram_bytes: int
    vram_bytes: int
    kv_cache_bytes: int
    ram_needed_bytes: int
    weights_bytes: int
    compute_bytes: int
    overhead_bytes: int
    parts: tuple[Part, ...]

    @property
    def total_bytes(self) -> int:
        """RAM and VRAM together: what "memory to run" means where one figure is shown."""
        return self.ram_bytes + self.vram_bytes


@dataclass(frozen=True)
class QuantizeCost:
    """Resources to produce the file: peak RSS while converting/quantizing and disk used on the way."""

    peak_ram_bytes: int
    temp_disk_bytes: int
    output_disk_bytes: int
    parts: tuple[Part, ...]


def kv_cache_bytes(plan: ModelPlan, ctx: int, kv_type: str = "f16", swa_full: bool = True) -> int:
    """Bytes of the K and V caches: every layer keeps K and V rows for each context cell.

    Sliding-window layers keep only window + one micro-batch of cells when ``swa_full`` is off
    (llama-cpp-python's default keeps them full size). Recurrent layers keep no KV cache but one F32 state
    of llama.cpp's size (a convolution window and the state matrix) for the one sequence.
    """
    t = KV_TYPES[kv_type]
    cells = _pad(max(ctx, 1), CTX_PAD)
    swa_cells = cells
    if plan.sliding_window and not swa_full:
        swa_cells = _pad(min(cells, plan.sliding_window + N_UBATCH), CTX_PAD)
    per_cell = row_bytes(t, plan.n_head_kv * plan.head_dim_k) + row_bytes(t, plan.n_head_kv * plan.head_dim_v)
    d_conv, d_inner, n_group, d_state = plan.ssm_shape
    state = 4 * (max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state) + d_state * d_inner)
    total = 0
    for il in range(plan.n_layer):
        if il < len(plan.recurrent_layers) and plan.recurrent_layers[il]:
            total += state
            continue
        swa = il < len(plan.swa_layers) and plan.swa_layers[il]
        total += per_cell * (swa_cells if swa else cells)
    return total


def compute_buffer_bytes(plan: ModelPlan, ctx: int, flash_attn: bool, resident: bool = True) -> int:
    """llama.cpp's compute buffers for a full micro-batch with the context full.

    Without flash attention, attention scores for every cell, token and head (F32, plus the mask) and
    their F16 copy in the CPU backend's work buffer dominate. The logits part of the reserved buffer
    (vocabulary x micro-batch) is only touched for tokens whose logits are asked for, so it counts in
    resident memory (``resident=True``: RAM) only as one row, but in full for a GPU's reservation.
    """
    u = min(N_UBATCH, ctx)
    cells = _pad(max(ctx, 1), CTX_PAD)
    if flash_attn:
        attn = cells * u * 2 * plan.n_head // 8 + plan.n_head * plan.head_dim_v * u * 4
        work = 0
    else:
        attn = cells * u * (plan.n_head * 4 + 4)
        work = cells * u * plan.n_head * 2  # scores converted to F16 for the V product
    act = u * 4 * (plan.n_embd * 3 + max(plan.n_ff, plan.n_embd))
    if resident:
        return attn + work + act
    return max(plan.n_vocab * u * 4, attn) + act


def run_memory(plan: ModelPlan, lay: FileLayout, ctx: int, kv_type: str = "f16", gpu_layers: int = 0,
               swa_full: bool = True) -> RunMemory:
    """Split weights, KV cache and buffers between RAM and VRAM for ``gpu_layers`` offloaded layers.

    llama.cpp offloads the last ``gpu_layers`` blocks; the output matrix goes with them once every block
    is offloaded; token embeddings always stay in RAM.
    """
    n_layer = plan.n_layer
    gpu_layers = max(0, min(gpu_layers, n_layer + 1))
    first_gpu = n_layer - min(gpu_layers, n_layer)
    flash = kv_type != "f16"  # llama.cpp quantizes the V cache only with flash attention
    per_layer, per_layer_repack, embd, output = weights_by_layer(plan, lay)
    w_vram = sum(per_layer[first_gpu:]) if gpu_layers else 0
    w_ram = sum(per_layer[:first_gpu]) + embd
    repack = sum(per_layer_repack[:first_gpu])
    if gpu_layers > n_layer:
        w_vram += output
    else:
        w_ram += output
    kv = kv_cache_bytes(plan, ctx, kv_type, swa_full)
    kv_vram = kv * min(gpu_layers, n_layer) // n_layer if n_layer else 0
    kv_ram = kv - kv_vram
    compute_ram = compute_buffer_bytes(plan, ctx, flash)
    compute_vram = 0
    if gpu_layers > 0:
        compute_vram = compute_buffer_bytes(plan, ctx, flash, resident=False)
        # the host keeps a buffer for the layers and outputs left on the CPU
        compute_ram = compute_ram * (n_layer - min(gpu_layers, n_layer)) // n_layer

    overhead = int(PROCESS_OVERHEAD + plan.n_vocab * (VOCAB_BYTES_PER_TOKEN + 4)
                   + plan.metadata_bytes * VOCAB_BYTES_PER_METADATA_BYTE)
    parts = [
        Part("weights (memory-mapped file)", w_ram, True, "ram"),
        Part("weights repacked for CPU matmul", repack, False, "ram",
             f"{'/'.join(sorted(REPACKED_TYPES))} layer weights get an interleaved copy on this CPU"),
        Part("weights on GPU", w_vram, True, "vram"),
        Part("KV cache", kv_ram, True, "ram", f"{ctx} tokens, {kv_type}"),
        Part("KV cache on GPU", kv_vram, True, "vram"),
        Part("compute buffers", compute_ram, False, "ram", "with the context full"),
        Part("compute buffers on GPU", compute_vram, False, "vram"),
        Part("runtime overhead", overhead, False, "ram", "Python, llama.cpp libraries, vocabulary tables"),
    ]
    parts = tuple(p for p in parts if p.bytes or p.where == "ram")
    ram = sum(p.bytes for p in parts if p.where == "ram")
    vram = sum(p.bytes for p in parts if p.where == "vram")
    # File pages of repacked weights count in RSS but are never read again: the kernel can drop them.
    return RunMemory(ram_bytes=ram, vram_bytes=vram, kv_cache_bytes=kv, ram_needed_bytes=ram - repack,
                     weights_bytes=w_ram + w_vram + repack,
                     compute_bytes=compute_ram + compute_vram, overhead_bytes=overhead, parts=parts)


def weights_by_layer(plan: ModelPlan, lay: FileLayout):
    """Weight bytes per block, repackable bytes per block, token embeddings, and output tensors."""
    key = ("by_layer", id(lay))  # layouts live in the plan cache, so their ids stay unique
    hit = plan._cache.get(key)
    if hit is None:
        per_layer = [0] * plan.n_layer
        repack = [0] * plan.n_layer
        embd = output = 0
        for t, (_, tname), b in zip(plan.tensors, lay.types, lay.sizes):
            layer = t.layer
            if 0 <= layer < plan.n_layer:
                per_layer[layer] += b
                if tname in REPACKED_TYPES and len(t.ne) >= 2 and t.ne[1] % 8 == 0:
                    repack[layer] += b
            elif t.name.startswith("output"):
                output += b
            else:
                embd += b
        hit = plan._cache[key] = (per_layer, repack, embd, output)
    return hit


def quantize_cost(plan: ModelPlan, lay: FileLayout) -> QuantizeCost:
    """Peak RAM and disk to produce the GGUF from this plan's source.

    From a Hugging Face checkpoint the converter first writes an intermediate GGUF in the source dtype
    (exact size; deleted at the end), then llama.cpp quantizes it. Both hold about one tensor at a time:
    the quantizer keeps the source rows, an F32 copy and the quantized rows of the largest tensor.
    """
    key = ("quantize_cost", id(lay))  # as in weights_by_layer: computed once a layout
    hit = plan._cache.get(key)
    if hit is None:
        hit = plan._cache[key] = _quantize_cost(plan, lay)
    return hit


def _quantize_cost(plan: ModelPlan, lay: FileLayout) -> QuantizeCost:
    held, largest, src_bytes = 0, plan.tensors[0], 0
    for t, b in zip(plan.tensors, lay.sizes):
        src = int(t.n_elements * _type_bytes(t.src_type))
        h = src + (0 if t.src_type == "F32" else t.n_elements * 4) + b
        if h > held:
            held, largest, src_bytes = h, t, src
    quant_peak = QUANTIZE_OVERHEAD + held
    parts = []
    temp = 0
    if plan.source_kind != "gguf":
        temp = source_gguf_bytes(plan)
        convert_peak = CONVERT_OVERHEAD + 2 * src_bytes
        parts.append(Part("intermediate GGUF (deleted after quantizing)", temp, True, "disk"))
        parts.append(Part("converter peak RSS", convert_peak, False, "ram"))
    else:
        convert_peak = 0
    parts.append(Part("quantizer peak RSS", quant_peak, False, "ram",
                      f"largest tensor {largest.name}: source rows + F32 copy + output rows"))
    parts.append(Part("output file", lay.file_bytes, True, "disk"))
    return QuantizeCost(peak_ram_bytes=max(quant_peak, convert_peak), temp_disk_bytes=temp,
                        output_disk_bytes=lay.file_bytes, parts=tuple(parts))


def _type_bytes(name: str) -> float:
    blk, size = gguf.GGML_QUANT_SIZES[QT[name]]
    return size / blk


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align
