"""What this installation of Nibble is made of: versions and the compute backends it can use.

Shown by ``nibble --version``, ``nibble selftest`` and the app's About dialog. Qt is never imported
here: its version comes from the installed package's metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys

import engine
from engine.core.llama import backends_from_files, llama_lib_dir


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


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
    lib_dir = llama_lib_dir()
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
        "llama_backends": backends_from_files(lib_dir),
    }
    if info["llama_cpp_python"] is None and lib_dir is not None:
        from engine.core.llama import llama_facts

        info["llama_cpp_python"] = llama_facts().get("version") or None
    if info["torch"] is None and importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
    if load_torch:
        info.update(_torch_devices())
    if not load_llama:
        return info
    from engine.core.llama import llama_facts

    llama = llama_facts()  # on GPU builds asked in a child: see engine.core.llama
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
