"""What this installation of Nibble is made of: versions and the compute backends it can use.

Shown by ``nibble --version``, ``nibble selftest`` and the app's About dialog. Qt is never imported
here: its version comes from the installed package's metadata.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path

import engine

# Backend library names in a llama-cpp-python build (libggml-<name>.so / ggml-<name>.dll) and what a
# person calls them. A build links or ships one library per backend it was compiled with.
_BACKEND_LIBS = {
    "cpu": "CPU", "cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan", "hip": "ROCm", "sycl": "SYCL",
    "opencl": "OpenCL", "blas": "BLAS", "musa": "MUSA", "cann": "CANN", "rpc": "RPC",
}
_BACKEND_NAMES = {v.lower(): v for v in _BACKEND_LIBS.values()} | {"mtl": "Metal", "hip": "ROCm"}


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _llama_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def _backends_from_files(lib_dir: Path | None) -> list[str]:
    """Backends whose ggml library ships beside llama.cpp (Metal is built into libggml on macOS)."""
    if lib_dir is None or not lib_dir.is_dir():
        return []
    found = []
    for f in lib_dir.iterdir():
        stem = f.name.split(".")[0].removeprefix("lib")
        if stem.startswith("ggml-"):
            label = _BACKEND_LIBS.get(stem[len("ggml-"):])
            if label and label not in found:
                found.append(label)
    return found


def no_llama_info(error: str | None = None) -> dict:
    """:func:`_llama_info`'s keys with nothing known, and why."""
    return {"ggml": None, "ggml_commit": None, "registered_backends": [], "gpu_offload": False,
            "system_info": "", "error": error}


def _llama_info() -> dict:
    """llama.cpp's own view: ggml version and commit, registered backends, GPU offload, CPU features."""
    info = no_llama_info()
    try:
        import llama_cpp
        from llama_cpp._ggml import libggml
    except Exception as exc:  # a broken native library must not hide the other versions
        info["error"] = f"{type(exc).__name__}: {exc}"
        return info
    for key, fn_name in (("ggml", "ggml_version"), ("ggml_commit", "ggml_commit")):
        fn = getattr(libggml, fn_name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            info[key] = fn().decode()
    try:
        count, get, name = libggml.ggml_backend_reg_count, libggml.ggml_backend_reg_get, libggml.ggml_backend_reg_name
        count.restype = ctypes.c_size_t
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        name.restype, name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        for i in range(count()):
            raw = name(get(i)).decode()
            info["registered_backends"].append(_BACKEND_NAMES.get(raw.lower(), raw))
    except AttributeError:
        pass
    info["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    info["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip(" |")
    return info


def _torch_devices() -> dict:
    try:
        import torch
    except Exception as exc:
        return {"torch_cuda": False, "torch_mps": False, "torch_error": f"{type(exc).__name__}: {exc}"}
    mps = getattr(torch.backends, "mps", None)
    return {
        "torch_cuda": bool(torch.cuda.is_available()),
        "torch_cuda_build": torch.version.cuda,
        "torch_mps": bool(mps is not None and mps.is_available()),
    }


def build_info(*, load_llama: bool = True, load_torch: bool = True) -> dict:
    """Versions of Nibble and its native parts, and the llama.cpp backends this build supports.

    ``load_llama`` loads llama.cpp's library to ask for its ggml version, registered backends and GPU
    offload; ``load_torch`` imports torch (seconds) to ask whether CUDA or MPS is usable. Without them
    only package metadata and the files beside llama.cpp are read.
    """
    lib_dir = _llama_lib_dir()
    info: dict = {
        "nibble": engine.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "frozen": bool(getattr(sys, "frozen", False)),
        "llama_cpp_python": _dist_version("llama_cpp_python", "llama-cpp-python"),
        "torch": _dist_version("torch"),
        "transformers": _dist_version("transformers"),
        "gguf": _dist_version("gguf"),
        "pyside6": _dist_version("PySide6-Essentials", "PySide6"),
        "llama_backends": _backends_from_files(lib_dir),
    }
    if info["llama_cpp_python"] is None and lib_dir is not None:
        from engine.llama_first import llama_facts

        info["llama_cpp_python"] = llama_facts().get("version") or None
    if info["torch"] is None and importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
    if load_torch:
        info.update(_torch_devices())
    if not load_llama:
        return info
    from engine.llama_first import llama_facts

    llama = llama_facts()  # on GPU builds asked in a child: see engine.llama_first
    info.update({"ggml": llama["ggml"], "ggml_commit": llama["ggml_commit"], "gpu_offload": llama["gpu_offload"],
                 "cpu_features": llama["system_info"]})
    if llama["error"]:
        info["llama_error"] = llama["error"]
    for b in llama["registered_backends"]:
        if b not in info["llama_backends"]:
            info["llama_backends"].append(b)
    if sys.platform == "darwin" and llama["gpu_offload"] and "Metal" not in info["llama_backends"]:
        info["llama_backends"].append("Metal")  # built into libggml on macOS, no separate library
    return info


def format_build_info(info: dict) -> list[str]:
    """The lines a person reads: one component a line."""
    def v(key: str) -> str:
        return info.get(key) or "not installed"

    llama = f"llama-cpp-python {v('llama_cpp_python')}"
    if info.get("ggml"):
        llama += f" (ggml {info['ggml']}, {info.get('ggml_commit') or 'unknown commit'})"
    backends = ", ".join(info.get("llama_backends") or []) or "none found"
    lines = [
        f"Nibble {info['nibble']}" + (" (bundle)" if info.get("frozen") else ""),
        f"Python {info['python']} on {info['platform']}",
        f"llama.cpp: {llama}",
        f"llama.cpp backends: {backends}" + (" (GPU offload available)" if info.get("gpu_offload") else ""),
    ]
    if info.get("llama_error"):
        lines.append(f"llama.cpp failed to load: {info['llama_error']}")
    torch = f"torch {v('torch')}"
    if "torch_cuda" in info:
        devices = ["CPU"] + (["CUDA"] if info["torch_cuda"] else []) + (["MPS"] if info["torch_mps"] else [])
        torch += f" (devices: {', '.join(devices)})"
    lines += [torch, f"transformers {v('transformers')}, gguf {v('gguf')}", f"Qt (PySide6) {v('pyside6')}"]
    return lines
