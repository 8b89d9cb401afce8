"""Which processes may load llama.cpp's native libraries.

With a GPU (CUDA) build of llama-cpp-python, llama.cpp could not share a process with the other native
libraries Nibble uses (seen on Linux, CUDA 13, torch 2.11 + cu130, llama-cpp-python 0.3.36):

* numpy imported before llama_cpp: llama.cpp crashed (segmentation fault) loading any model, even with
  no layers on the GPU;
* torch imported before llama_cpp: the same crash; llama_cpp imported before torch: importing torch
  crashed (``free(): invalid pointer``).

CPU builds have none of this. So on a GPU build, llama.cpp runs only in processes that load it first
(:func:`preload`): the quantizer's worker (``engine.llama_worker``), the GGUF model process
(``engine.gguf_process``), and a short child that answers questions about the build
(:func:`llama_facts`). Every other process, the CLI's and the app's, keeps llama.cpp out, so torch
stays free to load. ``NIBBLE_GGUF_PROCESS=1`` (or ``0``) forces GGUF models into a child (or not).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

_loaded_first: bool | None = None
_GPU_BACKENDS = ("cuda", "metal", "vulkan", "hip", "sycl", "musa", "opencl", "cann")


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
    from engine.about import _llama_lib_dir

    if sys.platform == "darwin":  # Metal is built into libggml on macOS
        return True
    lib_dir = _llama_lib_dir()
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
    from engine.about import _llama_info

    info = dict(_llama_info(), ftypes={}, version="")
    if info["error"] is None:
        import llama_cpp

        info["ftypes"] = {a: int(getattr(llama_cpp, a)) for a in dir(llama_cpp) if a.startswith("LLAMA_FTYPE_")}
        info["version"] = str(getattr(llama_cpp, "__version__", ""))
    return info


@functools.lru_cache(maxsize=1)
def llama_facts() -> dict:
    """What the installed llama.cpp offers: ``engine.about._llama_info``'s keys (ggml version, backends,
    ``gpu_offload``, ``system_info``, ``error``) plus file types (``ftypes``) and ``version``.

    Asked here on CPU builds; on GPU builds a short child process loads llama.cpp and answers.
    ``error`` says why llama.cpp could not be asked.
    """
    if in_process_ok():
        return _facts_here()
    try:
        p = subprocess.run([sys.executable, "-m", "engine.llama_first"], capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        from engine.about import no_llama_info

        return dict(no_llama_info(f"llama.cpp did not answer in a child process ({type(exc).__name__})"),
                    ftypes={}, version="")


if __name__ == "__main__":
    preload()
    print(json.dumps(_facts_here()))
