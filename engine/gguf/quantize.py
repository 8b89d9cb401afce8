"""Quantize a model to a GGUF type with llama.cpp's own quantizer (through llama-cpp-python).

A Hugging Face folder is first written as an unquantized GGUF (a temporary in the output folder),
then llama.cpp quantizes it in a child process, optionally with an importance matrix computed from
calibration text. Cancelling terminates the child and removes every temporary.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from engine.core.spawn import ROOT, child_env, module_argv
from engine.gguf.types import QuantType, find_type, quant_types  # noqa: F401  (quantize's API)

@dataclass
class QuantizeResult:
    output: Path
    type: str
    file_bytes: int
    seconds: float
    tensors: list[dict] = field(default_factory=list)  # name, type, mib
    imatrix_entries: int = 0

    def to_json(self) -> dict:
        return {"output": str(self.output), "type": self.type, "file_bytes": self.file_bytes,
                "seconds": round(self.seconds, 3), "imatrix_entries": self.imatrix_entries,
                "tensor_types": _count_types(self.tensors)}


def _count_types(tensors: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tensors:
        out[t["type"]] = out.get(t["type"], 0) + 1
    return out


def _is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _block_cancel_signals():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _restore_signals(old) -> None:
    import signal

    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _run_worker(job: dict, reporter: Reporter) -> dict:
    """Run the native job in a child process; forward its progress; terminate it on cancel.

    The caller removes the files the job was writing, whatever happens here.
    """
    proc: subprocess.Popen | None = None
    result: dict | None = None
    error: str | None = None
    setting: str | None = None
    sel = selectors.DefaultSelector()
    buf = b""
    try:
        # A cancel (SIGINT/SIGTERM) that lands while the worker is being started waits until it is
        # started, so the cleanup below always knows about the child it must stop.
        blocked = _block_cancel_signals()
        try:
            proc = subprocess.Popen(
                module_argv("engine.gguf.worker", json.dumps(job)),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT,
            )
        finally:
            _restore_signals(blocked)
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if reporter.is_cancelled():
                raise Cancelled()
            ready = sel.select(timeout=0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                kind = ev.pop("event", None)
                if kind == "progress":
                    reporter.progress(ev.pop("done"), ev.pop("total"), ev.pop("message", ""), **ev)
                elif kind == "log":
                    reporter.log(ev.get("message", ""))
                elif kind == "result":
                    result = ev
                elif kind == "error":
                    error, setting = ev.get("message"), ev.get("setting")
                    if ev.get("traceback"):
                        error += "\n" + ev["traceback"]
        rc = proc.wait()
    except BaseException:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    finally:
        sel.close()
    if rc != 0 or result is None:
        if error and not error.startswith("internal error"):
            raise NibbleError(error, setting=setting)
        stderr = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        detail = error or (stderr[-1] if stderr else f"exit code {rc}")
        raise RuntimeError(f"the llama.cpp worker failed: {detail}")
    return result


def _raise_if_disk_full(out: Path) -> None:
    import shutil

    free = shutil.disk_usage(out.parent).free
    if free < 64 * 2**20:
        raise NibbleError(f"disk full while writing {out} ({free / 2**20:.0f} MiB free); free some space in {out.parent} and try again")


def quantize(
    model: str | Path,
    qtype: str,
    out_path: str | Path,
    *,
    imatrix: str | Path | None = None,
    calibration: str | Path | None = None,
    imatrix_chunks: int | None = None,
    save_imatrix: str | Path | None = None,
    threads: int | None = None,
    reporter: Reporter | None = None,
) -> QuantizeResult:
    """Quantize ``model`` (a Hugging Face folder, ``demo`` or an unquantized GGUF) to ``qtype`` at ``out_path``.

    ``calibration`` is a text file to compute an importance matrix from ("default": Nibble's shipped
    text, or for the demo model its own dialogues); ``imatrix`` is an importance matrix file from llama-imatrix or ``save_imatrix``.
    """
    from engine.gguf.convert import check_output_folder, convert_to_gguf, temp_path_for
    from engine.models.source import open_source, resolve_model_path

    reporter = reporter or Reporter()
    started = time.perf_counter()
    qt = find_type(qtype)
    out = Path(out_path)
    if out.suffix.lower() != ".gguf":
        raise NibbleError(f"output path {out} must end in .gguf for a GGUF quantization", setting="output path")
    if out.is_dir():
        raise NibbleError(f"output path {out} is a folder; give a file name ending in .gguf", setting="output path")
    if imatrix and calibration:
        raise NibbleError("give either an importance matrix file or calibration text, not both",
                          setting="importance matrix")
    cal_path: Path | None = None
    if calibration:
        if str(calibration) == "default":  # for the demo, its own dialogues rather than general English
            from engine.models.demo import default_calibration_path

            cal_path = default_calibration_path(resolve_model_path(model))
        else:
            cal_path = Path(calibration)
        if not cal_path.is_file():
            raise NibbleError(f"calibration text {calibration}: file not found", setting="calibration text")
        if cal_path.stat().st_size < 1024:
            raise NibbleError(f"calibration text {cal_path}: only {cal_path.stat().st_size} bytes; give at least a few "
                              "pages of text", setting="calibration text")
    if imatrix and not Path(imatrix).is_file():
        raise NibbleError(f"importance matrix {imatrix}: file not found", setting="importance matrix")
    src_path = resolve_model_path(model)
    if src_path.resolve() == out.resolve():
        raise NibbleError(f"output path {out} is the input file; choose another name so the original is kept",
                         setting="output path")

    check_output_folder(out)
    cleanup: list[Path] = []
    part = temp_path_for(out, "part")
    cleanup.append(part)
    try:
        if _is_gguf(src_path):
            intermediate = src_path
        elif src_path.is_file():
            raise NibbleError(f"{src_path} is neither a GGUF file nor a model folder")
        else:
            src = open_source(src_path)
            intermediate = temp_path_for(out, "unquantized")
            cleanup.append(intermediate)
            convert_to_gguf(src, intermediate, reporter=reporter)
        reporter.check_cancel()
        job = {
            "input": str(intermediate), "output": str(part), "ftype": qt.ftype, "type": qt.name,
            "threads": threads, "imatrix_file": str(imatrix) if imatrix else None,
            "calibration_file": str(cal_path) if cal_path else None,
            "calibration_name": cal_path.name if cal_path else None,
            "imatrix_chunks": imatrix_chunks, "save_imatrix": str(save_imatrix) if save_imatrix else None,
        }
        try:
            res = _run_worker(job, reporter)
        except NibbleError:
            _raise_if_disk_full(out)
            raise
        os.replace(part, out)
    finally:
        for p in cleanup:
            if p != src_path:
                p.unlink(missing_ok=True)
    return QuantizeResult(
        output=out, type=qt.name, file_bytes=out.stat().st_size, seconds=time.perf_counter() - started,
        tensors=res.get("tensors", []), imatrix_entries=res.get("imatrix_entries", 0),
    )
