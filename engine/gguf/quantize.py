"""Quantize a model to a GGUF type with llama.cpp's own quantizer (through llama-cpp-python).

A Hugging Face folder is first written as an unquantized GGUF (a temporary in the output folder),
then llama.cpp quantizes it in a child process, optionally with an importance matrix computed from
calibration text. Cancelling terminates the child and removes every temporary.
"""

from __future__ import annotations

import contextlib
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
from engine.gguf.files import gguf_type, is_gguf
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


@contextlib.contextmanager
def cancel_deferred():
    """Hold SIGINT and SIGTERM (a Ctrl-C, the GUI's Cancel) until the block ends: around starting the worker,
    so the cleanup always knows the child it must stop, and around the cleanup, so a second Ctrl-C cannot cut
    it short. A signal that arrives meanwhile is delivered when the block ends. Main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the worker and wait until it is gone (it dies at once on SIGTERM: see engine.gguf.worker)."""
    with cancel_deferred():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


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
    err_tail = b""
    try:
        # The worker unblocks the signals it inherits here and dies at once on them; its stdin stays open
        # while this process lives, so it also ends when this process is killed.
        with cancel_deferred():
            proc = subprocess.Popen(
                module_argv("engine.gguf.worker", json.dumps(job)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT,
            )
        sel.register(proc.stdout, selectors.EVENT_READ)
        # llama.cpp logs to stderr while it loads a model: drain it too, or a full pipe stalls the child
        sel.register(proc.stderr, selectors.EVENT_READ)
        while True:
            if reporter.is_cancelled():
                raise Cancelled()
            ready = sel.select(timeout=0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = b""
            for key, _ in ready:
                data = os.read(key.fileobj.fileno(), 65536)
                if key.fileobj is proc.stderr:
                    err_tail = (err_tail + data)[-16384:]
                    if not data:
                        sel.unregister(proc.stderr)
                else:
                    chunk = data or b"EOF"
            if not chunk:
                continue
            if chunk == b"EOF":
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
        err_tail = (err_tail + proc.stderr.read())[-16384:]  # until the child closes it, exiting
        rc = proc.wait()
        stderr = err_tail.decode("utf-8", "replace").strip().splitlines()
    except BaseException:
        if proc is not None:
            _stop(proc)
        raise
    finally:
        sel.close()
    _stop(proc)
    if rc != 0 or result is None:
        if error and not error.startswith("internal error"):
            raise NibbleError(error, setting=setting)
        if rc < 0:
            import signal

            if -rc in (signal.SIGINT, signal.SIGTERM):  # a Ctrl-C that reached the worker first
                raise Cancelled()
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            raise NibbleError(f"llama.cpp's quantizer was stopped by {name}"
                              + (" (out of memory?)" if -rc == signal.SIGKILL else "")
                              + "; nothing was written: try again, or a smaller type or model")
        detail = error or (stderr[-1] if stderr else f"exit code {rc}")
        raise RuntimeError(f"the llama.cpp worker failed: {detail}")
    return result


def _rough_bits(qt: QuantType) -> float:
    """Bits per weight to expect of a type, for the free-space check before work (errs on the large side)."""
    name = qt.name
    for prefix, bits in (("F32", 32), ("F16", 16), ("BF16", 16), ("Q8", 8.5), ("Q6", 6.6), ("Q5", 6), ("IQ4", 4.6),
                         ("Q4", 5), ("Q3", 4.4), ("IQ3", 4), ("Q2", 3.5), ("IQ2", 3), ("IQ1", 2), ("TQ", 2.1)):
        if name.startswith(prefix):
            return bits
    return 16.0


def check_quantize_args(model, qtype: str, out_path, *, imatrix=None, calibration=None, imatrix_chunks=None,
                        save_imatrix=None, threads=None, extra_bytes: int = 0) -> dict:
    """Every check :func:`quantize` makes before work, so a longer job in front of it (AWQ's scales) can make
    them first. Returns what quantize needs: type, paths, input files. ``extra_bytes``: space the caller
    needs beside the output besides ours."""
    from engine.core.errors import check_at_least
    from engine.core.outputs import check_free_space, check_output, input_files
    from engine.models.source import resolve_model_path

    qt = find_type(qtype)
    check_at_least(imatrix_chunks, 1, "importance matrix windows", optional=True, setting="importance matrix windows")
    check_at_least(threads, 1, "threads", optional=True, setting="threads")
    out = Path(out_path).expanduser()
    if out.suffix.lower() != ".gguf":
        raise NibbleError(f"output path {out}: the output of a GGUF quantization must end in .gguf", setting="output path")
    if imatrix and calibration:
        raise NibbleError("give either an importance matrix file or calibration text, not both",
                          setting="importance matrix")
    src_path = resolve_model_path(model)
    default_cal = calibration is not None and str(calibration) == "default"
    cal_path = Path(calibration).expanduser() if calibration and not default_cal else None
    if cal_path is not None:
        if not cal_path.is_file():
            raise NibbleError(f"calibration text {calibration}: file not found", setting="calibration text")
        if cal_path.stat().st_size < 1024:
            raise NibbleError(f"calibration text {cal_path}: only {cal_path.stat().st_size} bytes; give at least a few "
                              "pages of text", setting="calibration text")
    if imatrix and not Path(imatrix).expanduser().is_file():
        raise NibbleError(f"importance matrix {imatrix}: file not found", setting="importance matrix")
    if save_imatrix and not calibration:
        raise NibbleError(f"saved importance matrix {save_imatrix}: there is no importance matrix to save; compute one "
                          "from calibration text", setting="saved importance matrix")
    inputs = [*input_files(src_path), Path(imatrix).expanduser() if imatrix else None, cal_path]
    check_output(out, inputs=inputs, replaceable=lambda p: gguf_type(p) == "model", kind="a GGUF model")
    saved = None
    if save_imatrix:
        saved = check_output(Path(save_imatrix), what="saved importance matrix", inputs=[*inputs, out],
                             replaceable=lambda p: gguf_type(p) == "imatrix", kind="an importance matrix")
    gguf_input = is_gguf(src_path)
    if src_path.is_file() and not gguf_input:
        raise NibbleError(f"{src_path} is neither a GGUF file nor a model folder")
    src_bytes = sum(f.stat().st_size for f in input_files(src_path) if f.suffix in (".safetensors", ".gguf"))
    need = int(src_bytes * _rough_bits(qt) / 16) + (0 if gguf_input else src_bytes) + extra_bytes + 16 * 2**20
    check_free_space(out.parent, need)
    if default_cal:  # for the demo, its own dialogues rather than general English (made on first use)
        from engine.models.demo import default_calibration_path

        cal_path = default_calibration_path(src_path)
    return {"type": qt, "out": out, "src": src_path, "gguf_input": gguf_input, "calibration": cal_path,
            "imatrix": Path(imatrix).expanduser() if imatrix else None, "save_imatrix": saved}


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
    source_name: str | None = None,
) -> QuantizeResult:
    """Quantize ``model`` (a Hugging Face folder, ``demo`` or an unquantized GGUF) to ``qtype`` at ``out_path``.

    ``calibration`` is a text file to compute an importance matrix from ("default": Nibble's shipped
    text, or for the demo model its own dialogues); ``imatrix`` is an importance matrix file from llama-imatrix or
    ``save_imatrix``. Every output (``out_path``, ``save_imatrix``) is written under a temporary name and
    renamed only when the whole job succeeded; neither may name an input. ``source_name``: how messages name
    the model when ``model`` is an intermediate file (a queue of types converts once).
    """
    from engine.core.outputs import temp_path, write_error
    from engine.gguf.convert import convert_to_gguf
    from engine.models.source import open_source

    reporter = reporter or Reporter()
    started = time.perf_counter()
    a = check_quantize_args(model, qtype, out_path, imatrix=imatrix, calibration=calibration,
                            imatrix_chunks=imatrix_chunks, save_imatrix=save_imatrix, threads=threads)
    qt, out, src_path, cal_path = a["type"], a["out"], a["src"], a["calibration"]
    part = temp_path(out, "part")
    im_part = temp_path(a["save_imatrix"], "part") if a["save_imatrix"] else None
    cleanup = [p for p in (part, im_part) if p is not None]
    try:
        if a["gguf_input"]:
            intermediate = src_path
        else:
            src = open_source(src_path)
            intermediate = temp_path(out, "unquantized")
            cleanup.append(intermediate)
            convert_to_gguf(src, intermediate, reporter=reporter)
        reporter.check_cancel()
        absolute = lambda p: os.path.abspath(p) if p else None  # noqa: E731 (the worker runs elsewhere)
        job = {
            "input": absolute(intermediate), "output": absolute(part), "ftype": qt.ftype, "type": qt.name,
            "source_name": source_name or str(model),
            "threads": threads, "imatrix_file": absolute(a["imatrix"]), "calibration_file": absolute(cal_path),
            "calibration_name": cal_path.name if cal_path else None,
            "imatrix_chunks": imatrix_chunks, "save_imatrix": absolute(im_part),
        }
        try:
            res = _run_worker(job, reporter)
        except NibbleError:
            _raise_if_disk_full(out)
            raise
        try:
            os.replace(part, out)
            if im_part is not None:
                os.replace(im_part, a["save_imatrix"])
        except OSError as exc:
            raise write_error(exc, out) from None
    finally:
        with cancel_deferred():
            for p in cleanup:
                if p != src_path:
                    p.unlink(missing_ok=True)
    return QuantizeResult(
        output=out, type=qt.name, file_bytes=out.stat().st_size, seconds=time.perf_counter() - started,
        tensors=res.get("tensors", []), imatrix_entries=res.get("imatrix_entries", 0),
    )


def _raise_if_disk_full(out: Path) -> None:
    import shutil

    from engine.core.outputs import disk_full_error

    if shutil.disk_usage(out.parent).free < 64 * 2**20:
        raise disk_full_error(out)
