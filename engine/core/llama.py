"""Which processes may load llama.cpp's native libraries.

With a GPU (CUDA) build of llama-cpp-python, llama.cpp could not share a process with the other native
libraries Nibble uses (seen on Linux, CUDA 13, torch 2.11 + cu130, llama-cpp-python 0.3.36):

* numpy imported before llama_cpp: llama.cpp crashed (segmentation fault) loading any model, even with
  no layers on the GPU;
* torch imported before llama_cpp: the same crash; llama_cpp imported before torch: importing torch
  crashed (``free(): invalid pointer``).

CPU builds have none of this. So on a GPU build, llama.cpp runs only in processes that load it first
(:func:`preload`): the quantizer's worker (``engine.gguf.worker``), the GGUF model process
(``engine.runtime.process``), and a short child that answers questions about the build
(:func:`llama_facts`). Every other process, the CLI's and the app's, keeps llama.cpp out, so torch
stays free to load. ``NIBBLE_GGUF_PROCESS=1`` (or ``0``) forces GGUF models into a child (or not).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from engine.core.spawn import child_env, module_argv

_loaded_first: bool | None = None
_GPU_BACKENDS = ("cuda", "metal", "vulkan", "hip", "sycl", "musa", "opencl", "cann")

# Backend library names in a llama-cpp-python build (libggml-<name>.so / ggml-<name>.dll) and what a
# person calls them. A build links or ships one library per backend it was compiled with.
_BACKEND_LIBS = {
    "cpu": "CPU", "cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan", "hip": "ROCm", "sycl": "SYCL",
    "opencl": "OpenCL", "blas": "BLAS", "musa": "MUSA", "cann": "CANN", "rpc": "RPC",
}
_BACKEND_NAMES = {v.lower(): v for v in _BACKEND_LIBS.values()} | {"mtl": "Metal", "hip": "ROCm"}


def llama_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def backends_from_files(lib_dir: Path | None) -> list[str]:
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
    """:func:`llama_info`'s keys with nothing known, and why."""
    return {"ggml": None, "ggml_commit": None, "registered_backends": [], "gpu_offload": False,
            "system_info": "", "error": error}


def llama_info() -> dict:
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


def preload() -> None:
    """Import llama_cpp now, if it is installed, and remember whether it came before numpy and torch."""
    global _loaded_first
    if _loaded_first is not None or "llama_cpp" in sys.modules:
        return
    first = "numpy" not in sys.modules and "torch" not in sys.modules
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # not installed, or its library does not load: the commands that need it say so
        return
    _loaded_first = first


@functools.lru_cache(maxsize=1)
def gpu_build() -> bool:
    """Whether the installed llama-cpp-python has a GPU backend, judged from its files (loading nothing)."""
    if sys.platform == "darwin":  # Metal is built into libggml on macOS
        return True
    lib_dir = llama_lib_dir()
    if lib_dir is None or not lib_dir.is_dir():
        return False
    for f in lib_dir.iterdir():
        stem = f.name.split(".")[0].removeprefix("lib")
        if stem.startswith("ggml-") and stem[len("ggml-"):] in _GPU_BACKENDS:
            return True
    return False


def in_process_ok() -> bool:
    """Whether this process may load llama.cpp itself."""
    forced = os.environ.get("NIBBLE_GGUF_PROCESS", "").strip()
    if forced == "0":
        return True
    return not gpu_build() or bool(_loaded_first and "torch" not in sys.modules)


def needs_own_process(share_with_torch: bool = False) -> bool:
    """Whether a GGUF model opened now must run in a child process.

    ``share_with_torch``: this process also runs (or is about to run) a model through torch.
    """
    forced = os.environ.get("NIBBLE_GGUF_PROCESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return not in_process_ok() or (gpu_build() and share_with_torch)


def _facts_here() -> dict:
    info = dict(llama_info(), ftypes={}, version="")
    if info["error"] is None:
        import llama_cpp

        info["ftypes"] = {a: int(getattr(llama_cpp, a)) for a in dir(llama_cpp) if a.startswith("LLAMA_FTYPE_")}
        info["version"] = str(getattr(llama_cpp, "__version__", ""))
    return info


@functools.lru_cache(maxsize=1)
def llama_facts() -> dict:
    """What the installed llama.cpp offers: :func:`llama_info`'s keys (ggml version, backends,
    ``gpu_offload``, ``system_info``, ``error``) plus file types (``ftypes``) and ``version``.

    Asked here on CPU builds; on GPU builds a short child process loads llama.cpp and answers.
    ``error`` says why llama.cpp could not be asked.
    """
    if in_process_ok():
        return _facts_here()
    try:
        p = subprocess.run(module_argv("engine.core.llama"), capture_output=True, text=True, timeout=120, env=child_env())
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        return dict(no_llama_info(f"llama.cpp did not answer in a child process ({type(exc).__name__})"),
                    ftypes={}, version="")


if __name__ == "__main__":
    preload()
    print(json.dumps(_facts_here()))
