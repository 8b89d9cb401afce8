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
from functools import lru_cache
from pathlib import Path

from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from engine.core.spawn import ROOT, child_env, module_argv
from engine.gguf.files import gguf_type, is_gguf

# llama-quantize's short descriptions, for people choosing a type. The list of types itself is read
# from the installed library (see quant_types), so new types appear without a change here.
_DESCRIPTIONS = {
    "F32": "32-bit float, no loss", "F16": "16-bit float, practically lossless", "BF16": "bfloat16, as most models are trained",
    "Q8_0": "8-bit, nearly lossless", "Q6_K": "6.6 bits, very small loss", "Q5_K_M": "5.7 bits, small loss",
    "Q5_K_S": "5.5 bits, small loss", "Q5_1": "6 bits (legacy)", "Q5_0": "5.5 bits (legacy)",
    "Q4_K_M": "4.9 bits, the usual balance", "Q4_K_S": "4.6 bits", "Q4_1": "5 bits (legacy)", "Q4_0": "4.5 bits (legacy)",
    "IQ4_NL": "4.5 bits, non-linear", "IQ4_XS": "4.25 bits, non-linear", "Q3_K_L": "4.3 bits", "Q3_K_M": "3.9 bits",
    "Q3_K_S": "3.5 bits", "IQ3_M": "3.7 bits", "IQ3_S": "3.4 bits", "IQ3_XS": "3.3 bits", "IQ3_XXS": "3.1 bits",
    "Q2_K": "3.4 bits on small models, large loss", "Q2_K_S": "2.9 bits", "IQ2_M": "2.7 bits", "IQ2_S": "2.5 bits",
    "IQ2_XS": "2.3 bits", "IQ2_XXS": "2.1 bits", "IQ1_M": "1.75 bits, extreme loss", "IQ1_S": "1.56 bits, extreme loss",
    "TQ1_0": "1.69 bits ternary (for ternary-trained models)", "TQ2_0": "2.06 bits ternary (for ternary-trained models)",
}
# Types llama-quantize does not offer for ordinary models, or that name no real file type.
_HIDDEN = {"GUESSED", "MOSTLY_Q4_1_SOME_F16"}
# Aliases llama-quantize accepts.
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


@dataclass(frozen=True)
class QuantType:
    name: str
    ftype: int
    description: str
    needs_imatrix: bool  # without an importance matrix llama.cpp refuses (for most models)
    recommends_imatrix: bool  # quality improves markedly with one

    @property
    def is_float(self) -> bool:
        return self.name in ("F32", "F16", "BF16")


def _needs_imatrix(name: str) -> bool:
    return name.startswith(("IQ1_", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS")) or name == "Q2_K_S"


@lru_cache(maxsize=1)
def quant_types() -> tuple[QuantType, ...]:
    """Every file type the installed llama.cpp can quantize to, from llama_cpp's LLAMA_FTYPE_* constants."""
    from engine.core.llama import llama_facts

    facts = llama_facts()
    if not facts.get("ftypes"):
        raise NibbleError(f"llama.cpp is not usable ({facts.get('error') or 'no file types'}); "
                          "run the set-up command from README.md")
    out = []
    for attr, ftype in sorted(facts["ftypes"].items(), key=lambda kv: kv[0]):
        key = attr[len("LLAMA_FTYPE_"):]
        if key in _HIDDEN:
            continue
        name = key.removeprefix("MOSTLY_").removeprefix("ALL_")
        if "MOE" in name or "FP4" in name:
            continue  # mixture-of-experts / fp4-only types: none of the supported families use them
        out.append(QuantType(
            name=name, ftype=ftype, description=_DESCRIPTIONS.get(name, ""),
            needs_imatrix=_needs_imatrix(name),
            recommends_imatrix=name.startswith("IQ") or name.startswith(("Q2_K", "Q3_K")),
        ))
    order = {n: i for i, n in enumerate(_DESCRIPTIONS)}
    return tuple(sorted(out, key=lambda t: (order.get(t.name, 999), t.name)))


def find_type(name: str) -> QuantType:
    key = name.strip().upper()
    key = _ALIASES.get(key, key)
    for t in quant_types():
        if t.name == key:
            return t
    names = ", ".join(t.name for t in quant_types())
    raise NibbleError(f"--type {name}: unknown quantization type; choose one of {names}, or AWQ")


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
                    error = ev.get("message")
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
            raise NibbleError(error)
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
    check_at_least(imatrix_chunks, 1, "--imatrix-chunks", optional=True)
    check_at_least(threads, 1, "--threads", optional=True)
    out = Path(out_path).expanduser()
    if out.suffix.lower() != ".gguf":
        raise NibbleError(f"--out {out}: the output of a GGUF quantization must end in .gguf")
    if imatrix and calibration:
        raise NibbleError("give either --imatrix or --calibration, not both")
    src_path = resolve_model_path(model)
    default_cal = calibration is not None and str(calibration) == "default"
    cal_path = Path(calibration).expanduser() if calibration and not default_cal else None
    if cal_path is not None:
        if not cal_path.is_file():
            raise NibbleError(f"--calibration {calibration}: file not found")
        if cal_path.stat().st_size < 1024:
            raise NibbleError(f"--calibration {cal_path}: only {cal_path.stat().st_size} bytes; give at least a few pages of text")
    if imatrix and not Path(imatrix).expanduser().is_file():
        raise NibbleError(f"--imatrix {imatrix}: file not found")
    if save_imatrix and not calibration:
        raise NibbleError(f"--save-imatrix {save_imatrix}: there is no importance matrix to save; add --calibration FILE")
    inputs = [*input_files(src_path), Path(imatrix).expanduser() if imatrix else None, cal_path]
    check_output(out, inputs=inputs, replaceable=lambda p: gguf_type(p) == "model", kind="a GGUF model")
    saved = None
    if save_imatrix:
        saved = check_output(Path(save_imatrix), what="--save-imatrix", inputs=[*inputs, out],
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
) -> QuantizeResult:
    """Quantize ``model`` (a Hugging Face folder, ``demo`` or an unquantized GGUF) to ``qtype`` at ``out_path``.

    ``calibration`` is a text file to compute an importance matrix from ("default": Nibble's shipped
    text, or for the demo model its own dialogues); ``imatrix`` is an importance matrix file from llama-imatrix or
    ``save_imatrix``. Every output (``out_path``, ``save_imatrix``) is written under a temporary name and
    renamed only when the whole job succeeded; neither may name an input.
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
            "source_name": str(model),
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
