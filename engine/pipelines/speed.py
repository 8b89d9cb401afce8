"""Speed and memory of an original and its quantized copy, like with like: both through the same runtime.

Timing the original through transformers beside a GGUF through llama.cpp mostly measures the runtimes.
So when the quantized model is a GGUF, the original's speed and memory are measured on an unquantized GGUF
of it (its stored precision, BF16 or F16), converted once and cached in Nibble's data folder; each side is
labelled with the runtime that ran it. The original's outputs and logits (compare, eval) still come from
transformers, in float32, where exactness matters. Each side is benchmarked in its own child process
(``nibble bench --json``), so one model's memory is not counted in the other's.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
from dataclasses import dataclass

from engine.analysis.bench import BenchResult
from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from engine.core.spawn import child_env, module_argv
from engine.models.resolve import GGUF, ORIGINAL, model_kind, resolve_model_path

NOTE = ("The original's answers and logits come from transformers in float32 (exact); its speed and memory "
        "from {what}, through the same runtime as the quantized model.")


@dataclass
class SpeedSide:
    model: str  # what was run
    runtime: str  # e.g. "llama.cpp (GGUF BF16)" or "transformers (float32)"
    bench: BenchResult


@dataclass
class SpeedComparison:
    original: SpeedSide
    quantized: SpeedSide
    note: str  # what each side's figures stand for, in a sentence

    def to_json(self) -> dict:
        return {"original": {"model": self.original.model, "runtime": self.original.runtime,
                             **self.original.bench.to_json()},
                "quantized": {"model": self.quantized.model, "runtime": self.quantized.runtime,
                              **self.quantized.bench.to_json()},
                "note": self.note}


def _fingerprint(folder: pathlib.Path) -> str:
    """Changes when the folder's config or weights change (names, sizes, modification times)."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(folder.iterdir()):
        if f.suffix in (".json", ".safetensors", ".bin"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def reference_gguf(original: str | pathlib.Path, reporter: Reporter | None = None) -> pathlib.Path:
    """An unquantized GGUF of the Hugging Face model ``original``, made once and cached (see the module)."""
    from engine.gguf.convert import convert_to_gguf
    from engine.models.library import data_dir

    src = resolve_model_path(original)
    if model_kind(src) != ORIGINAL:
        raise NibbleError(f"{src} is not an original Hugging Face model folder; the reference GGUF is made from one")
    out = data_dir() / "reference-gguf" / f"{src.name}-{_fingerprint(src)}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.gguf")
    try:
        convert_to_gguf(src, tmp, reporter=reporter)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def gguf_precision(path: pathlib.Path) -> str:
    """The file type llama.cpp reports for a GGUF (BF16, F16, Q4_K_M, ...)."""
    from engine.models.inspect import file_type_name, gguf_field, open_gguf

    return file_type_name(gguf_field(open_gguf(path), "general.file_type", None)) or "?"


def runtime_label(path: pathlib.Path) -> str:
    if model_kind(path) == GGUF:
        return f"llama.cpp (GGUF {gguf_precision(path)})"
    if model_kind(path) == ORIGINAL:
        return "transformers (float32)"
    return "transformers (AWQ)"


def bench_in_child(model: pathlib.Path, *, n_prompt: int, n_gen: int, repetitions: int, device: str = "cpu",
                   threads: int | None = None, reporter: Reporter | None = None) -> BenchResult:
    """``nibble bench MODEL --json`` in a child process; cancelling stops the child."""
    reporter = reporter or Reporter()
    args = [str(model), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(repetitions), "--device", device, "--json"]
    if threads:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(module_argv("engine", "bench", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env())
    while True:
        try:
            out, err = proc.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            if reporter.is_cancelled():
                proc.terminate()
                proc.wait()
                raise Cancelled() from None
    if proc.returncode != 0:
        line = (err.strip().splitlines() or ["no message"])[-1]
        raise NibbleError(f"measuring the speed of {model} failed: {line.removeprefix('nibble: ')}")
    d = json.loads(out)
    return BenchResult(**{k: v for k, v in d.items() if k in BenchResult.__dataclass_fields__})


def compare_speed(original: str | pathlib.Path, quantized: str | pathlib.Path, *, n_prompt: int = 128,
                  n_gen: int = 64, repetitions: int = 3, device: str = "cpu", threads: int | None = None,
                  reporter: Reporter | None = None) -> SpeedComparison:
    """Speed and memory of both, the original through the quantized model's runtime (see the module)."""
    reporter = reporter or Reporter()
    orig, quant = resolve_model_path(original), resolve_model_path(quantized)
    if model_kind(quant) == GGUF and model_kind(orig) == ORIGINAL:
        reporter.progress(0, 3, "unquantized GGUF of the original (made once)")
        ref = reference_gguf(orig, reporter)
        note = NOTE.format(what=f"an unquantized GGUF of it ({gguf_precision(ref)})")
    else:
        ref = orig
        note = NOTE.format(what="the same weights") if model_kind(orig) == ORIGINAL else (
            "Both sides run through their own runtimes, as given.")
    sides = []
    for i, path in enumerate((ref, quant)):
        reporter.check_cancel()
        reporter.progress(i + 1, 3, f"measuring {path.name}")
        r = bench_in_child(path, n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, device=device,
                           threads=threads, reporter=reporter)
        sides.append(SpeedSide(str(path), runtime_label(path), r))
    reporter.progress(3, 3, "done")
    return SpeedComparison(sides[0], sides[1], note)
