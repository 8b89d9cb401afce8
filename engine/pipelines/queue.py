"""Several GGUF types from one source in one go: the source is converted once, the importance matrix (when
computed from calibration text) is computed once, and each type is quantized from them in turn, each output
named by its type. Cancelling stops the queue; outputs already finished stay, nothing half-written does."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from engine.pipelines.record import record_quantized


def output_name(model, type_name: str) -> str:
    """The file (GGUF) or folder (AWQ) name an output of ``model`` at ``type_name`` gets: ``NAME-TYPE[.gguf]``."""
    from engine.pipelines.quantize import is_awq_type

    name = Path(str(model).rstrip("/\\")).name or "model"
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    t = type_name.strip().upper()
    return f"{name}-{t}" if is_awq_type(t) else f"{name}-{t}.gguf"


def parse_types(text: str) -> list[str]:
    """``"Q4_K_M,Q8_0"`` -> the canonical names, in order, each once (a one-line error for an unknown one)."""
    from engine.gguf.quantize import find_type

    out: list[str] = []
    for part in str(text).split(","):
        if part.strip():
            name = find_type(part).name
            if name not in out:
                out.append(name)
    if not out:
        raise NibbleError("give at least one quant type", setting="quant type")
    return out


def check_queue_folder(out_dir) -> Path:
    """The folder several types are written into: an existing folder, or a new one in an existing folder."""
    folder = Path(out_dir).expanduser()
    if folder.suffix.lower() == ".gguf" or folder.is_file():
        raise NibbleError(f"output path {folder}: several types are written into a folder, one file each; give a "
                          "folder", setting="output path")
    if not folder.is_dir() and not folder.parent.is_dir():
        raise NibbleError(f"output path {folder}: the folder {folder.parent} does not exist; create it or choose "
                          "another output path", setting="output path")
    return folder


class _ItemReporter(Reporter):
    """Passes everything on, each progress event marked with which of the queue's items it belongs to."""

    def __init__(self, inner: Reporter, item: int, items: int, type_name: str):
        self.inner, self.item, self.items, self.type_name = inner, item, items, type_name

    def progress(self, done: int, total: int, message: str = "", **extra: Any) -> None:
        self.inner.progress(done, total, message, item=self.item, items=self.items, item_type=self.type_name, **extra)

    def log(self, message: str) -> None:
        self.inner.log(message)

    def is_cancelled(self) -> bool:
        return self.inner.is_cancelled()


@dataclass
class QueueResult:
    outputs: list = field(default_factory=list)  # engine.gguf.quantize.QuantizeResult, in order
    seconds: float = 0.0

    def to_json(self) -> dict:
        first = self.outputs[0] if self.outputs else None
        return {"output": str(first.output) if first else "", "type": ",".join(r.type for r in self.outputs),
                "file_bytes": sum(r.file_bytes for r in self.outputs), "seconds": round(self.seconds, 3),
                "outputs": [r.to_json() for r in self.outputs]}


def quantize_queue(model, types: list[str], out_dir, *, imatrix=None, calibration=None, imatrix_chunks: int | None = None,
                   threads: int | None = None, reporter: Reporter | None = None) -> QueueResult:
    """Quantize ``model`` to each of ``types`` into ``out_dir`` (created when its parent exists), converting once."""
    from engine.core.outputs import temp_path
    from engine.gguf.files import is_gguf
    from engine.gguf.quantize import check_quantize_args, quantize
    from engine.models.demo import default_calibration_path
    from engine.models.resolve import resolve_model_path

    reporter = reporter or Reporter()
    started = time.perf_counter()
    types = parse_types(",".join(types))
    folder = check_queue_folder(out_dir)
    if not folder.is_dir():
        folder.mkdir()
    src = resolve_model_path(model)
    if calibration is not None and str(calibration) == "default":
        calibration = default_calibration_path(src)  # decided by the original, not the intermediate file
    outs = [folder / output_name(model, t) for t in types]
    for t, out in zip(types, outs):  # every check before any work
        check_quantize_args(model, t, out, imatrix=imatrix, calibration=calibration, imatrix_chunks=imatrix_chunks,
                            threads=threads)
    cal_name = Path(calibration).name if calibration else None
    temps: list[Path] = []
    result = QueueResult()
    try:
        if is_gguf(src):
            intermediate = src
        else:
            from engine.gguf.convert import convert_to_gguf
            from engine.models.source import open_source

            intermediate = temp_path(outs[0], "unquantized")
            temps.append(intermediate)
            convert_to_gguf(open_source(src), intermediate, reporter=_ItemReporter(reporter, 1, len(types), types[0]))
        saved = temp_path(outs[0], "imatrix") if calibration else None
        for i, (t, out) in enumerate(zip(types, outs)):
            reporter.check_cancel()
            reporter.log(f"[{i + 1}/{len(types)}] {t} -> {out}")
            item = _ItemReporter(reporter, i + 1, len(types), t)
            if calibration and i == 0:  # computed once, saved beside the outputs, used by the others
                temps.append(saved)
                r = quantize(intermediate, t, out, calibration=calibration, imatrix_chunks=imatrix_chunks,
                             save_imatrix=saved if len(types) > 1 else None, threads=threads, reporter=item,
                             source_name=str(model))
            else:
                r = quantize(intermediate, t, out, imatrix=saved if calibration else imatrix, threads=threads,
                             reporter=item, source_name=str(model))
            result.outputs.append(r)
            record_quantized(model, r.output, kind="gguf", type_name=r.type, calibration=cal_name)
    except (Cancelled, KeyboardInterrupt):
        if not result.outputs:
            raise
        kept = ", ".join(str(r.output) for r in result.outputs)
        raise Cancelled(f"cancelled; nothing half-written was kept, and the types finished before it stay: {kept}") \
            from None
    finally:
        for p in temps:
            if p is not None and p != src:
                try:
                    os.unlink(p)
                except OSError:
                    pass
    result.seconds = time.perf_counter() - started
    return result
