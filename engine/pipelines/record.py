"""Keeping Nibble's library up to date from whichever front end did the work: what was quantized from what
(so the app lists CLI outputs with their type and original), and what an evaluation measured (so a model card
can carry the figures). A library that cannot be written never fails the job itself."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.core.errors import NibbleError
from engine.models import library
from engine.models.resolve import looks_like_repo_id, resolve_model_path

log = logging.getLogger(__name__)


def record_quantized(model, out, *, kind: str, type_name: str, calibration: str | None = None) -> library.Entry | None:
    """Record ``out`` (a GGUF file or AWQ folder of ``kind``) as made from ``model`` with ``type_name``."""
    try:
        source = resolve_model_path(model)
        hub_id = str(model).split("@")[0] if looks_like_repo_id(str(model)) and not Path(str(model)).exists() else None
        figures = {"calibration": calibration} if calibration else {}
        return library.record_output(out, kind=kind, source_path=source, type=type_name, figures=figures,
                                     source_hub_id=hub_id)
    except (NibbleError, OSError) as exc:
        log.warning("the library was not updated: %s", exc)
        return None


def record_evaluation(reference, candidate, result, text_name: str, task: dict | None = None) -> library.Entry | None:
    """Store an evaluation's figures on the candidate's library entry (adding the candidate if it is new)."""
    figures = {
        "kld_mean": result.kld_mean, "kld_p99": result.kld_p99, "top1": result.top1_agreement,
        "ppl_reference": result.ppl_reference, "ppl_candidate": result.ppl_candidate,
        "eval_text": Path(text_name).name, "eval_ctx": result.ctx, "eval_reference": str(reference),
    }
    if task and task.get("candidate") is not None:
        figures["task_accuracy"] = task["candidate"].overall
    try:
        lib = library.default()
        entry = lib.find_path(candidate)
        if entry is None:
            from engine.runtime import model_kind

            path = resolve_model_path(candidate)
            kind = model_kind(path)
            if kind not in ("gguf", "awq"):
                return None
            return lib.record_output(path, kind=kind, source_path=resolve_model_path(reference), type=kind.upper(),
                                     figures=figures)
        return lib.update_figures(entry.id, figures)
    except (NibbleError, OSError) as exc:
        log.warning("the library was not updated: %s", exc)
        return None
