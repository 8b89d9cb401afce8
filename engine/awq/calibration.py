"""Calibration text: where it comes from and how it becomes blocks of token ids."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.core.errors import NibbleError
from engine.models.demo import default_calibration_path


def load_tokenizer(model_dir: Path):
    """The model's own tokenizer (its repository code never runs)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as exc:
        raise NibbleError(f"{model_dir}: cannot load the tokenizer ({exc}); the folder needs tokenizer files") from exc


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


def calibration_file(path: Path | str | None, model_dir: Path | str | None = None) -> Path:
    """The text file ``path`` names ("default" or None: the one :func:`calibration_blocks` would use)."""
    if path is None or str(path) == "default":
        return default_calibration_path(model_dir)
    return Path(path).expanduser()


def count_tokens(model_dir: Path | str, path: Path | str | None = None) -> int:
    """How many tokens the model's own tokenizer makes of the calibration text (what samples are cut from)."""
    from engine.models.resolve import resolve_model_path

    model_dir = resolve_model_path(model_dir)
    p = calibration_file(path, model_dir)
    if not p.is_file():
        raise NibbleError(f"calibration text {p} not found; check its path", setting="calibration text")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NibbleError(f"calibration file {p} is not UTF-8 text", setting="calibration text") from exc
    return len(load_tokenizer(model_dir)(text, add_special_tokens=False)["input_ids"])


def fit_samples(tokens: int, samples: int, seqlen: int) -> int:
    """The most samples of ``seqlen`` tokens, at most ``samples``, that ``tokens`` of text hold (0: not one)."""
    return max(0, min(samples, tokens // max(seqlen, 1)))
