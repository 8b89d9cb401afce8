"""What this machine has to run models on, and the versions the About dialog shows."""

from __future__ import annotations

import dataclasses
import platform
import sys


@dataclasses.dataclass
class Device:
    key: str  # "cpu", "cuda", "metal"
    label: str  # what the user sees
    usable: bool  # the installed llama.cpp build can use it
    note: str = ""
    free_bytes: int | None = None
    total_bytes: int | None = None


def _llama_gpu_offload() -> bool | None:
    try:
        import llama_cpp
    except Exception:
        return None
    try:
        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return None


def available_memory() -> tuple[int, int]:
    """(available, total) system RAM in bytes."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def devices() -> list[Device]:
    """CPU always; CUDA with its GPU name and free VRAM; Metal on Apple silicon — each marked by whether the
    installed llama.cpp build supports it."""
    import os

    avail, total = available_memory()
    cores = os.cpu_count() or 1
    out = [
        Device("cpu", f"CPU — {cores} threads, {avail / 2**30:.1f} GiB RAM free", True, free_bytes=avail, total_bytes=total)
    ]
    offload = _llama_gpu_offload()
    try:
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


def llama_cpp_version() -> str:
    try:
        import llama_cpp

        return str(llama_cpp.__version__)
    except Exception:
        return "not installed"


def versions() -> dict[str, str]:
    import engine
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion

    out = {"Nibble": engine.__version__, "llama.cpp (llama-cpp-python)": llama_cpp_version()}
    try:
        import torch

        out["PyTorch"] = torch.__version__
    except Exception:
        out["PyTorch"] = "not installed"
    out["Qt"] = f"{qVersion()} (PySide6 {pyside_version})"
    try:
        import pyqtgraph

        out["pyqtgraph"] = pyqtgraph.__version__
    except Exception:
        pass
    out["Python"] = platform.python_version()
    offload = _llama_gpu_offload()
    backends = ["CPU"]
    if offload:
        backends.append("GPU offload")
    out["Backends"] = ", ".join(backends) + (" (llama.cpp not loaded)" if offload is None else "")
    return out
