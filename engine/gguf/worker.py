"""Child-process entry for native llama.cpp jobs (importance matrix, quantization).

Native code can neither be interrupted nor be trusted not to crash, so ``engine.gguf.quantize`` runs it here:
``python -m engine.gguf.worker JOB_JSON``. Progress goes to stdout as JSON lines; the parent terminates
this process to cancel, and removes what it was writing.
"""

from __future__ import annotations

if __name__ == "__main__":
    import os
    import signal
    import threading

    # The parent starts this process with SIGINT and SIGTERM held (engine.gguf.quantize.cancel_deferred):
    # take them back, and let them end the process at once, even inside native code.
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def _exit_with_parent() -> None:
        """The parent holds our stdin open while it lives: its end (even by SIGKILL) ends this worker."""
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(3)

    import stat

    if stat.S_ISFIFO(os.fstat(0).st_mode):
        threading.Thread(target=_exit_with_parent, daemon=True).start()

    from engine.core.llama import preload  # llama.cpp's libraries first: see engine.core.llama

    preload()

import ctypes  # noqa: E402
import json
import re
import sys
import traceback
from pathlib import Path

from engine.core.errors import NibbleError
from engine.core.progress import JsonLinesReporter

_TENSOR_LINE = re.compile(
    r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)\s+-\s+\[[^\]]*\],\s+type\s+=\s+(\S+),\s*(?:converting to (\S+))?(?:.*?size\s*=\s*([\d.]+) MiB(?:\s*->\s*([\d.]+) MiB)?)?"
)


class _LogCapture:
    """Collects llama.cpp's log output line by line and turns tensor lines into progress events."""

    def __init__(self, reporter: JsonLinesReporter):
        self.reporter = reporter
        self.partial = ""
        self.lines: list[str] = []
        self.tensors: list[dict] = []

    def feed(self, text: str) -> None:
        self.partial += text
        while "\n" in self.partial:
            line, self.partial = self.partial.split("\n", 1)
            self._line(line)

    def _line(self, line: str) -> None:
        self.lines.append(line)
        m = _TENSOR_LINE.search(line)
        if m:
            done, total, name, src_type, new_type, size_a, size_b = m.groups()
            new_type = (new_type or src_type).rstrip(".").upper()
            out_mib = float(size_b or size_a or 0)
            self.tensors.append({"name": name, "type": new_type, "mib": out_mib})
            self.reporter.progress(int(done), int(total), f"{name} -> {new_type}", stage="quantize",
                                   tensor=name, tensor_type=new_type)


def _install_log(capture: _LogCapture):
    import llama_cpp as L

    @L.llama_log_callback
    def cb(level, text, _user):
        try:
            capture.feed(text.decode("utf-8", "replace"))
        except Exception:
            pass

    L.llama_log_set(cb, ctypes.c_void_p(0))
    return cb  # keep a reference alive


def _importance(job: dict, reporter: JsonLinesReporter):
    from engine.gguf.imatrix import ImportanceMatrix, compute_imatrix, load_imatrix, save_imatrix

    im: ImportanceMatrix | None = None
    if job.get("imatrix_file"):
        im = load_imatrix(job["imatrix_file"])
    elif job.get("calibration_file"):
        with open(job["calibration_file"], encoding="utf-8", errors="replace") as f:
            text = f.read()
        im = compute_imatrix(
            job["input"], text, max_chunks=job.get("imatrix_chunks"),
            threads=job.get("threads"), reporter=reporter, dataset_name=job.get("calibration_name", "calibration"),
        )
        if job.get("save_imatrix"):
            save_imatrix(im, job["save_imatrix"])
    return im


def _profile(job: dict, reporter: JsonLinesReporter) -> dict:
    """The importance matrix, then every tensor's weighted error at each candidate type (engine.gguf.mixed)."""
    import os

    from engine.gguf.quant_error import measure_errors
    from engine.gguf.sensitivity import load_pairs

    im = _importance(job, reporter)
    errors = measure_errors(job["input"], job["candidates"], load_pairs(job["pairs_file"]),
                            im.values() if im is not None else {},
                            threads=int(job.get("threads") or os.cpu_count() or 1), reporter=reporter)
    return {"errors": errors, "imatrix_entries": len(im.sums) if im else 0}


def _overrides(tensor_types: dict, keep: list):
    """A NULL-terminated llama_model_tensor_override array: each tensor's name, anchored, and its type."""
    import llama_cpp as L

    from engine.gguf.mixed import override_patterns

    pats = override_patterns(tensor_types)
    arr = (L.llama_model_tensor_override * (len(pats) + 1))()
    for i, (pattern, qtype) in enumerate(pats):
        b = pattern.encode()
        keep.append(b)
        arr[i].pattern = b
        arr[i].type = qtype
    arr[len(pats)].pattern = None
    keep.append(arr)
    return ctypes.cast(arr, ctypes.POINTER(L.llama_model_tensor_override))


def _quantize(job: dict, reporter: JsonLinesReporter) -> dict:
    import llama_cpp as L
    import numpy as np

    im = _importance(job, reporter)
    capture = _LogCapture(reporter)
    keep = [_install_log(capture)]
    params = L.llama_model_quantize_default_params()
    params.ftype = int(job["ftype"])
    params.nthread = int(job.get("threads") or 0)
    if im is not None:
        values = im.values()
        arr = (L.llama_model_imatrix_data * (len(values) + 1))()
        for i, (name, v) in enumerate(values.items()):
            v = np.ascontiguousarray(v, dtype=np.float32)
            keep.append(v)
            nb = name.encode()
            keep.append(nb)
            arr[i].name = nb
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(values)].name = None
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(L.llama_model_imatrix_data))
    if job.get("tensor_types"):
        params.tt_overrides = _overrides(job["tensor_types"], keep)
    rc = L.llama_model_quantize(job["input"].encode(), job["output"].encode(), ctypes.byref(params))
    capture.feed("\n")
    log = "\n".join(capture.lines)
    if rc != 0:
        if "requires an imatrix" in log or "requires an importance matrix" in log:
            raise NibbleError(
                f"{job['type']} needs an importance matrix: compute one from calibration text (Nibble's own, or "
                "a file) or give an imatrix file", setting="importance matrix")
        raise _failure(job, capture.lines, rc)
    needs_imatrix = "will require an imatrix" in log
    fallbacks = sum(1 for ln in capture.lines if "falling back" in ln)
    return {"tensors": capture.tensors, "needs_imatrix": needs_imatrix, "fallbacks": fallbacks,
            "imatrix_entries": len(im.sums) if im else 0}


def _failure(job: dict, lines: list[str], rc: int) -> NibbleError:
    """llama.cpp's reason for refusing, in one line that names the model and what to do."""
    source = job.get("source_name") or job["input"]
    reason = next((m.group(1).strip() for ln in reversed(lines) if (m := re.search(r"failed to quantize: (.*)", ln))),
                  None)
    if reason and (m := re.search(r"tensor '([^']+)' has invalid data", reason)):
        return NibbleError(f"{source}: tensor {m.group(1)} holds NaN or infinite values, so the weights are "
                           "damaged; download the model again or use an intact copy")
    if reason and (m := re.search(r"requantizing from type (\S+) is disabled", reason)):
        return NibbleError(f"{source} is already quantized ({m.group(1)}); quantize from the original model "
                           "or an F16, BF16 or F32 GGUF")
    if reason and re.search(r"iostream error|failed to write|No space|File too large", reason):
        from engine.core.outputs import disk_full_error

        return disk_full_error(Path(job["output"]))
    if not reason:
        reason = next((ln.strip() for ln in reversed(lines) if ln.strip()), f"error {rc}")
    return NibbleError(f"llama.cpp could not quantize {source} to {job['type']}: {reason[:300]}")


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    reporter = JsonLinesReporter(sys.stdout)
    try:
        result = _profile(job, reporter) if job.get("kind") == "profile" else _quantize(job, reporter)
        reporter._emit({"event": "result", **result})
        return 0
    except NibbleError as exc:
        reporter._emit({"event": "error", "message": str(exc), "setting": exc.setting})
        return 2
    except Exception as exc:  # a bug: keep the traceback for the parent to show
        reporter._emit({"event": "error", "message": f"internal error: {exc}", "traceback": traceback.format_exc()})
        return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
