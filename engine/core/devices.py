"""What this machine has to run models on: its devices (CPU, CUDA GPUs, Apple Metal) and what is free on
them (RAM, VRAM, disk at the output folder). The one place that asks; the estimate, the runtimes, AWQ and
the app all read it. ``python -m engine.core.devices DIR [--flops]`` prints :func:`probe` as one JSON line,
then, with ``--flops``, ``{"flops": ...}`` from :func:`probe_flops` (the app asks in a child at ``nice 10``
so that importing torch, or the matrix products keeping every core busy, cannot stall its window)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """Free resources, in bytes. ``free_vram_bytes`` is 0 with no GPU; ``gpu`` names it."""

    free_ram_bytes: int
    free_vram_bytes: int
    free_disk_bytes: int
    disk_path: str
    gpu: str = ""


def probe_machine(out_dir: str | os.PathLike = ".") -> Machine:
    """Free RAM, free VRAM (when a CUDA GPU is usable) and free disk at ``out_dir``."""
    return Machine(**probe(out_dir)["machine"])


def free_memory(device: str = "cpu") -> int | None:
    """Bytes free for a model on ``device`` ("cpu", "cuda[:N]", "mps"); None where it cannot be known (mps)."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else None
        return int(torch.cuda.mem_get_info(index)[0])
    if device == "mps":
        return None
    return available_memory()[0]


@dataclasses.dataclass
class Device:
    key: str  # "cpu", "cuda", "metal"
    label: str  # what the user sees
    usable: bool  # the installed llama.cpp build can use it
    note: str = ""
    free_bytes: int | None = None
    total_bytes: int | None = None


def _llama_gpu_offload() -> bool | None:
    from engine.core.llama import llama_facts  # asked in a child on GPU builds: see engine.core.llama

    facts = llama_facts()
    return None if facts.get("error") else bool(facts.get("gpu_offload"))


def available_memory() -> tuple[int, int]:
    """(available, total) system RAM in bytes."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def devices() -> list[Device]:
    """CPU always; CUDA with its GPU name and free VRAM; Metal on Apple silicon — each marked by whether the
    installed llama.cpp build supports it."""
    avail, total = available_memory()
    cores = os.cpu_count() or 1
    out = [
        Device("cpu", f"CPU — {cores} threads, {avail / 2**30:.1f} GiB RAM free", True, free_bytes=avail, total_bytes=total)
    ]
    offload = _llama_gpu_offload()
    try:
        if not _may_have_cuda():
            raise ImportError("no NVIDIA driver")
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, tot = torch.cuda.mem_get_info(i)
                name = torch.cuda.get_device_name(i)
                usable = bool(offload)
                note = "" if usable else "the installed llama.cpp build has no CUDA support"
                out.append(Device("cuda", f"CUDA — {name}, {free / 2**30:.1f} GiB free", usable, note, free, tot))
    except Exception:
        pass
    if sys.platform == "darwin" and platform.machine() == "arm64":
        usable = bool(offload)
        note = "" if usable else "the installed llama.cpp build has no Metal support"
        out.append(Device("metal", "Metal — Apple GPU (shares system memory)", usable, note, avail, total))
    return out


def _may_have_cuda() -> bool:
    """False where there is certainly no NVIDIA GPU (so torch, slow to import, need not be asked)."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    return True


def probe(out_dir: str = ".") -> dict:
    """Devices and free resources as plain data (what the child process below prints)."""
    devs = devices()
    gpu = next((d for d in devs if d.key == "cuda"), None)
    folder = Path(out_dir).expanduser().resolve()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    machine = {
        "free_ram_bytes": devs[0].free_bytes, "free_vram_bytes": gpu.free_bytes if gpu else 0,
        "free_disk_bytes": shutil.disk_usage(folder).free, "disk_path": str(folder),
        "gpu": gpu.label if gpu else "",
    }
    return {"devices": [dataclasses.asdict(d) for d in devs], "machine": machine}


def probe_flops(seconds: float = 0.25) -> float:
    """Floating-point operations per second of float32 matrix products on this machine (all cores)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((512, 512), dtype=np.float32)
    b = rng.random((512, 1024), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    n, t0 = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n * 2 * 512 * 512 * 1024 / dt


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--flops"]
    print(json.dumps(probe(args[0] if args else ".")), flush=True)
    if "--flops" in sys.argv[1:]:
        print(json.dumps({"flops": probe_flops()}), flush=True)
