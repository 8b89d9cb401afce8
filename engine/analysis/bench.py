"""Speed and memory of one model: prompt processing and generation tokens/s, time to first token.

The method is llama-bench's, so figures for a GGUF can be set beside it: prompt processing decodes
``n_prompt`` random tokens (BOS first when the model uses it) in one pass from an empty context, asking for
the logits of the last position only; generation decodes ``n_gen`` tokens one at a time from an empty
context, each with its logits. One warm-up run of each, then ``repetitions`` timed runs; the figures are the
mean and standard deviation of the per-run rates. Time to first token is a fresh prompt of ``n_prompt``
tokens through to the first sampled token and its text.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.core.errors import NibbleError, check_at_least
from engine.core.progress import Reporter
from engine.runtime import Runtime, sample_token


@dataclass
class BenchResult:
    model: str
    kind: str
    device: str
    threads: int | None
    n_prompt: int
    n_gen: int
    repetitions: int
    pp_tokens_per_s: float
    pp_std: float
    tg_tokens_per_s: float
    tg_std: float
    ttft_s: float
    rss_bytes: int
    peak_rss_bytes: int
    vram_bytes: int | None = None
    pp_samples: list[float] = field(default_factory=list)  # tokens/s of each timed run
    tg_samples: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _peak_rss(pid: int | None = None) -> int:
    """Peak resident memory of this process, or of process ``pid`` (a model's child process).

    On Linux it is the process's own high-water mark (VmHWM), which starts anew at exec: getrusage's
    ru_maxrss survives exec, so a bench child started by the app would report the app's memory as its own."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid is not None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _rss(pid: int | None = None) -> int:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def _nvml_used(pids: set[int]) -> int | None:
    """GPU memory held by ``pids`` through NVML (the driver's library; no torch in this process), or the
    whole device's use where per-process figures are not available."""
    import ctypes
    import os

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    class ProcessInfo(ctypes.Structure):
        _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong), ("gpuInstanceId", ctypes.c_uint),
                    ("computeInstanceId", ctypes.c_uint)]

    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        index = int(visible) if visible.isdigit() else 0
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
            return None
        count = ctypes.c_uint(64)
        procs = (ProcessInfo * 64)()
        if nvml.nvmlDeviceGetComputeRunningProcesses_v3(handle, ctypes.byref(count), procs) == 0:
            mine = [p.usedGpuMemory for p in procs[:count.value] if p.pid in pids]
            if mine:
                return int(sum(mine))
        mem = Memory()
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) != 0:
            return None
        return int(mem.used)
    finally:
        nvml.nvmlShutdown()


def _vram(rt: Runtime) -> int | None:
    if not str(rt.device).startswith("cuda"):
        return None
    if rt.kind == "gguf":  # llama.cpp's buffers; torch must not load beside llama.cpp (engine.core.llama)
        import os

        return _nvml_used({os.getpid()} | ({rt.pid} if getattr(rt, "pid", None) else set()))
    try:
        import torch

        return int(torch.cuda.max_memory_allocated())
    except Exception:
        return None


def bench(rt: Runtime, *, n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5, warmup: bool = True,
          seed: int = 0, reporter: Reporter | None = None) -> BenchResult:
    """Measure ``rt`` the way llama-bench does (see the module docstring)."""
    for value, what in ((n_prompt, "prompt length"), (n_gen, "generated tokens"), (repetitions, "repetitions")):
        check_at_least(value, 1, what)
    longest = max(n_prompt, n_gen)
    if longest > rt.n_ctx:  # refused here, before llama.cpp logs its own failure to stderr
        raise NibbleError(f"a {longest}-token run (prompt length {n_prompt}, generated tokens {n_gen}) does not fit "
                          f"the context of {rt.n_ctx} tokens {rt.name} was opened with; raise the context length "
                          f"or lower the prompt length or generated tokens", setting="context length")
    reporter = reporter or Reporter()
    rng = np.random.default_rng(seed)

    def random_tokens(n: int) -> list[int]:
        ids = rng.integers(0, rt.n_vocab, size=n).tolist()
        if rt.add_bos and rt.bos_id is not None:
            ids[0] = rt.bos_id
        return ids

    def run_pp() -> float:
        return n_prompt / rt.time_prompt(random_tokens(n_prompt))

    def run_tg() -> float:
        return n_gen / rt.time_generation(random_tokens(n_gen))

    total = (repetitions + int(warmup)) * 2 + 1
    done = 0
    pp, tg = [], []
    for label, fn, out in (("prompt processing", run_pp, pp), ("generation", run_tg, tg)):
        if n_prompt <= 0 and fn is run_pp or n_gen <= 0 and fn is run_tg:
            continue
        for i in range(repetitions + int(warmup)):
            reporter.check_cancel()
            rate = fn()
            if i or not warmup:
                out.append(rate)
            done += 1
            reporter.progress(done, total, f"{label} {rate:.1f} tokens/s")
    ttft = 0.0
    if n_prompt > 0:
        ids = random_tokens(n_prompt)
        rt.reset()
        t0 = time.perf_counter()
        logits = rt._prefill(ids)
        rt.detokenize([sample_token(logits, 0.0, 1.0, rng)])
        ttft = time.perf_counter() - t0
    rt.reset()
    reporter.progress(total, total, "done")
    child = getattr(rt, "pid", None)  # a GGUF running in its own process (engine.runtime.process)
    rss = _rss() + (_rss(child) if child else 0)
    return BenchResult(
        model=str(rt.path), kind=rt.kind, device=str(rt.device), threads=getattr(rt, "threads", None),
        n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions,
        pp_tokens_per_s=statistics.fmean(pp) if pp else 0.0, pp_std=statistics.stdev(pp) if len(pp) > 1 else 0.0,
        tg_tokens_per_s=statistics.fmean(tg) if tg else 0.0, tg_std=statistics.stdev(tg) if len(tg) > 1 else 0.0,
        ttft_s=ttft, rss_bytes=rss, peak_rss_bytes=max(rss, _peak_rss() + (_peak_rss(child) if child else 0)),
        vram_bytes=_vram(rt), pp_samples=pp, tg_samples=tg,
    )
