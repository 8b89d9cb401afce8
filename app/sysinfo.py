"""What this machine has to run models on, and the versions the About dialog shows."""

from __future__ import annotations

import platform

from engine.core.devices import Device, Machine, devices, probe  # noqa: F401  (the views read devices through here)


def llama_cpp_version() -> str:
    from engine.core.llama import llama_facts

    return llama_facts().get("version") or "not installed"


def versions() -> dict[str, str]:
    """What the About dialog lists: Nibble, llama.cpp and its backends, torch, Qt and the rest."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion

    import engine
    from engine.core.buildinfo import build_info

    info = build_info(load_torch=False)

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


def probe_in_child(out_dir: str, on_result, parent=None, on_flops=None):
    """Run :func:`probe` in a child process and hand its result to ``on_result(devices, machine)``; with
    ``on_flops``, the same child then measures the matrix rate and hands it to ``on_flops(flops)``. The child
    runs at ``nice 10``, as the app's background jobs do.

    Finding a GPU imports torch, whose start-up holds Python's GIL for a second or more, and the matrix
    products keep every core busy for a quarter of a second; in a child process neither can stall the UI
    thread. The devices arrive as soon as they are known, before the rate.
    """
    import json as _json

    from app.children import start_module_in_child

    got = {"devices": False}

    def devices_line(data: dict) -> None:
        got["devices"] = True
        devs = [Device(**d) for d in data.get("devices") or []] or [Device("cpu", "CPU", True)]
        machine = None
        if data.get("machine"):
            try:
                machine = Machine(**data["machine"])
            except TypeError:
                machine = None
        try:
            on_result(devs, machine)
        except RuntimeError:  # the page that asked is gone
            pass

    def line(raw: bytes) -> None:
        try:
            data = _json.loads(raw.decode() or "{}")
        except ValueError:
            data = {}
        if "flops" in data:
            if on_flops is not None:
                try:
                    on_flops(float(data["flops"]))
                except RuntimeError:
                    pass
        elif not got["devices"]:
            devices_line(data)

    def read():
        try:
            while proc.canReadLine():
                line(bytes(proc.readLine()).strip())
        except RuntimeError:  # the app is closing
            pass

    def finished(_proc):
        read()
        try:
            rest = bytes(proc.readAllStandardOutput()).strip()
        except RuntimeError:
            rest = b""
        if rest:
            line(rest)
        if not got["devices"]:  # the child failed before its first line: the CPU is always there
            devices_line({})

    proc = start_module_in_child("engine.core.devices", out_dir, *(["--flops"] if on_flops is not None else []),
                                 on_finished=finished)
    proc.readyReadStandardOutput.connect(read)  # no output is read before control is back in the event loop
    return proc
