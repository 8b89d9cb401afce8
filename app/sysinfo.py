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
    from engine.llama_first import llama_facts  # asked in a child on GPU builds: see engine.llama_first

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
    import os

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
    import os

    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    return True


def llama_cpp_version() -> str:
    from engine.llama_first import llama_facts

    return llama_facts().get("version") or "not installed"


def versions() -> dict[str, str]:
    """What the About dialog lists: Nibble, llama.cpp and its backends, torch, Qt and the rest."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion

    from app import features

    build_info = features.engine_function("about", "build_info")
    info = build_info(load_torch=False) if build_info else {}
    import engine

    llama = info.get("llama_cpp_python") or llama_cpp_version()
    if info.get("ggml"):
        llama += f" (ggml {info['ggml']})"
    backends = ", ".join(info.get("llama_backends") or ["CPU"])
    if info.get("gpu_offload"):
        backends += " (GPU offload available)"
    out = {
        "Nibble": engine.__version__,
        "llama.cpp (llama-cpp-python)": llama,
        "Backends": backends,
        "PyTorch": info.get("torch") or _dist("torch"),
        "Qt": f"{qVersion()} (PySide6 {pyside_version})",
        "transformers": info.get("transformers") or _dist("transformers"),
        "gguf": info.get("gguf") or _dist("gguf"),
        "Python": platform.python_version(),
    }
    try:
        import pyqtgraph

        out["pyqtgraph"] = pyqtgraph.__version__
    except ImportError:
        pass
    return out


def _dist(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"

def probe(out_dir: str = ".") -> dict:
    """Devices and free resources as plain data (what the child process below prints)."""
    import pathlib
    import shutil

    devs = devices()
    gpu = next((d for d in devs if d.key == "cuda"), None)
    folder = pathlib.Path(out_dir).expanduser().resolve()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    machine = {
        "free_ram_bytes": devs[0].free_bytes, "free_vram_bytes": gpu.free_bytes if gpu else 0,
        "free_disk_bytes": shutil.disk_usage(folder).free, "disk_path": str(folder),
        "gpu": gpu.label if gpu else "",
    }
    return {"devices": [dataclasses.asdict(d) for d in devs], "machine": machine}


_probes: set = set()


def probe_in_child(out_dir: str, on_result, parent=None):
    """Run :func:`probe` in a child process and hand its result to ``on_result(devices, machine)``.

    Finding a GPU imports torch, whose start-up holds Python's GIL for a second or more; in a child
    process that cannot stall the UI thread.
    """
    import json as _json

    from PySide6.QtCore import QProcess

    from app.jobs import REPO_ROOT

    proc = QProcess()  # not owned by a widget: it may outlive the page that asked
    _probes.add(proc)
    proc.setWorkingDirectory(str(REPO_ROOT))
    env = proc.processEnvironment()
    if env.isEmpty():
        from PySide6.QtCore import QProcessEnvironment

        env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONPATH", str(REPO_ROOT))
    proc.setProcessEnvironment(env)

    def finished(*_):
        try:
            data = _json.loads(bytes(proc.readAllStandardOutput()).decode() or "{}")
        except (ValueError, RuntimeError):  # RuntimeError: the app is closing
            data = {}
        devs = [Device(**d) for d in data.get("devices") or []] or [
            Device("cpu", "CPU", True)]
        machine = None
        if data.get("machine"):
            try:
                from engine.estimate import Machine

                machine = Machine(**data["machine"])
            except (ImportError, TypeError):
                machine = None
        _probes.discard(proc)
        try:
            on_result(devs, machine)
        except RuntimeError:  # the page that asked is gone
            pass

    proc.finished.connect(finished)
    proc.start(sys.executable, ["-m", "app.sysinfo", out_dir])
    return proc


if __name__ == "__main__":
    import json

    print(json.dumps(probe(sys.argv[1] if len(sys.argv) > 1 else ".")))
