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
from functools import lru_cache
from pathlib import Path

from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from engine.core.spawn import ROOT, child_env, module_argv

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
    sel = selectors.DefaultSelector()
    buf = b""
    err_tail = b""
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
            raise NibbleError(error)
        stderr = err_tail.decode("utf-8", "replace").strip().splitlines()
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
        raise NibbleError(f"--out {out}: the output of a GGUF quantization must end in .gguf")
    if out.is_dir():
        raise NibbleError(f"--out {out} is a folder; give a file name ending in .gguf")
    if imatrix and calibration:
        raise NibbleError("give either --imatrix or --calibration, not both")
    cal_path: Path | None = None
    if calibration:
        if str(calibration) == "default":  # for the demo, its own dialogues rather than general English
            from engine.models.demo import default_calibration_path

            cal_path = default_calibration_path(resolve_model_path(model))
        else:
            cal_path = Path(calibration)
        if not cal_path.is_file():
            raise NibbleError(f"--calibration {calibration}: file not found")
        if cal_path.stat().st_size < 1024:
            raise NibbleError(f"--calibration {cal_path}: only {cal_path.stat().st_size} bytes; give at least a few pages of text")
    if imatrix and not Path(imatrix).is_file():
        raise NibbleError(f"--imatrix {imatrix}: file not found")
    src_path = resolve_model_path(model)
    if src_path.resolve() == out.resolve():
        raise NibbleError(f"--out {out} is the input file; choose another name so the original is kept")

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
