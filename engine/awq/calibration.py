"""Calibration text: where it comes from and how it becomes blocks of token ids."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.core.errors import NibbleError
from engine.models.calibration import (  # noqa: F401
    calibration_file, calibration_tokenizer, count_tokens, fit_samples, load_tokenizer)
from engine.models.demo import default_calibration_path


def calibration_blocks(tokenizer, path: Path | str | None, samples: int, seqlen: int,
                       model_dir: Path | str | None = None) -> torch.Tensor:
    """``samples`` consecutive blocks of ``seqlen`` token ids [samples, seqlen] from a text file.

    The whole file is tokenized once and cut into blocks; documents run into each other as in
    AutoAWQ's calibration set. With no file, Nibble's calibration text; for the demo model (and what
    was made from it, see ``engine.models.demo.is_demo_model``) its own dialogues instead.
    """
    if samples < 1 or seqlen < 2:
        raise NibbleError(f"calibration samples ({samples}) must be at least 1 and the sample length ({seqlen}) at "
                          "least 2 tokens", setting="calibration samples" if samples < 1 else "sample length")
    if path is not None and str(path) == "default":
        path = None
    p = Path(path) if path is not None else default_calibration_path(model_dir)
    if not p.is_file():
        where = "give a plain text file as calibration text" if path is None else "check its path"
        raise NibbleError(f"calibration text {p} not found; {where}", setting="calibration text")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NibbleError(f"calibration file {p} is not UTF-8 text", setting="calibration text") from exc
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    need = samples * seqlen
    if len(ids) < need:
        fit = len(ids) // seqlen
        raise NibbleError(
            f"calibration file {p} gave {len(ids)} tokens, enough for {fit} samples of {seqlen} tokens; "
            f"{samples} samples need {need}; use {max(fit, 1)} samples, a shorter sample length or a longer file",
            setting="calibration samples")
    return torch.tensor(ids[:need], dtype=torch.long).reshape(samples, seqlen)
