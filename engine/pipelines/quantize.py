"""Quantizing a model end to end, as a user asks for it: to a GGUF type (optionally with AWQ's
activation-aware scales folded into the weights first), or to an AWQ checkpoint. The CLI and the app (through
the CLI's child process) call these same functions."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from engine.core.progress import Reporter
from engine.pipelines.record import record_quantized


def is_awq_type(type_name: str) -> bool:
    return type_name.strip().upper() == "AWQ"


def awq_scales_note(type_name: str) -> str | None:
    """Why AWQ scales may not help ``type_name``, or None where they were measured to help (4-bit types)."""
    if type_name.strip().upper().startswith(("Q4", "IQ4")):
        return None
    return (f"AWQ's scales are searched for 4-bit weights; with {type_name} they lowered the KL divergence on one "
            "model measured and raised it on another (benchmarks/RESULTS.md); compare with an evaluation")


def quantize_model(model, type_name: str, out, *, awq_scales: bool = False, imatrix=None, calibration=None,
                   imatrix_chunks: int | None = None, save_imatrix=None, threads: int | None = None,
                   bits: int = 4, group_size: int = 128, samples: int = 128, seqlen: int = 512,
                   device: str = "cpu", reporter: Reporter | None = None,
                   note: Callable[[str], None] | None = None):
    """Quantize ``model`` to ``type_name`` ("AWQ" or a GGUF type) at ``out``; returns the result of
    :func:`engine.awq.quantize_awq` or :func:`engine.gguf.quantize.quantize`.

    ``awq_scales``: for GGUF, fold AWQ's scales into a scaled copy of the weights (in a temporary folder beside
    ``out``, removed at the end) and quantize that. No clipping: searched for AWQ's own 4-bit groups, it raised
    the KL divergence of K-quants (benchmarks/awq_gguf.py). ``note`` receives remarks for the user.
    """
    reporter = reporter or Reporter()
    if is_awq_type(type_name):
        from engine.awq import quantize_awq

        result = quantize_awq(model, out, bits=bits, group_size=group_size, calibration=calibration,
                              samples=samples, seqlen=seqlen, device=device, reporter=reporter)
        record_quantized(model, result.out_dir, kind="awq", type_name=f"AWQ-W{bits}-G{group_size}",
                                 calibration=_calibration_name(model, calibration))
        write_awq_card(Path(result.out_dir))
        return result
    result = _quantize_gguf(model, type_name, out, awq_scales=awq_scales, imatrix=imatrix, calibration=calibration,
                            imatrix_chunks=imatrix_chunks, save_imatrix=save_imatrix, threads=threads,
                            group_size=group_size, samples=samples, seqlen=seqlen, device=device, reporter=reporter,
                            note=note)
    uses_text = calibration is not None or awq_scales
    record_quantized(model, result.output, kind="gguf", type_name=result.type,
                     calibration=_calibration_name(model, calibration) if uses_text else None)
    return result


def _calibration_name(model, calibration) -> str:
    if calibration not in (None, "default"):
        return Path(calibration).name
    from engine.models.demo import default_calibration_path
    from engine.models.resolve import resolve_model_path

    return default_calibration_path(resolve_model_path(model)).name


def write_awq_card(folder: Path) -> None:
    """Replace the original model's README (which describes the unquantized weights) with the AWQ folder's own card."""
    from engine.pipelines.publish import build_card, describe_output

    out = describe_output(folder)
    card = build_card([out], folder.name, {out.path: (folder.name + "/", 1)})
    tmp = folder / ".README.md.tmp"
    tmp.write_text(card.render(), encoding="utf-8")
    tmp.replace(folder / "README.md")


def _quantize_gguf(model, type_name, out, *, awq_scales, imatrix, calibration, imatrix_chunks, save_imatrix, threads,
                   group_size, samples, seqlen, device, reporter, note):
    from engine.gguf.quantize import quantize

    if not awq_scales:
        return quantize(model, type_name, out, imatrix=imatrix, calibration=calibration,
                        imatrix_chunks=imatrix_chunks, save_imatrix=save_imatrix, threads=threads, reporter=reporter)
    from engine.awq import apply_awq_to_weights
    from engine.awq.quantize import output_bytes
    from engine.awq.config import read_config
    from engine.core.outputs import temp_path
    from engine.gguf.quantize import check_quantize_args
    from engine.models.resolve import resolve_model_path

    # Everything the GGUF step will check, checked before AWQ's search (minutes to hours) starts.
    src = resolve_model_path(model)
    scaled_bytes = output_bytes(src, read_config(src), "scaled") if src.is_dir() else 0
    check_quantize_args(model, type_name, out, imatrix=imatrix, calibration=calibration, imatrix_chunks=imatrix_chunks,
                        save_imatrix=save_imatrix, threads=threads, extra_bytes=scaled_bytes)
    if note and (text := awq_scales_note(type_name)):
        note(text)
    scaled_dir = temp_path(Path(out).expanduser(), "awq-scaled")
    try:
        scaled_dir.mkdir()
        apply_awq_to_weights(model, scaled_dir, group_size=group_size, calibration=calibration, samples=samples,
                             seqlen=seqlen, device=device, reporter=reporter, overwrite=True, clip=False)
        return quantize(scaled_dir, type_name, out, imatrix=imatrix, calibration=calibration,
                        imatrix_chunks=imatrix_chunks, save_imatrix=save_imatrix, threads=threads, reporter=reporter)
    finally:
        shutil.rmtree(scaled_dir, ignore_errors=True)
