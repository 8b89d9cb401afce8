"""The calibration text as the wizard sees it before a run: which file, how many tokens, how many samples it
holds. Nothing here imports torch, so the app can ask from a worker thread without stalling its window."""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.errors import NibbleError
from engine.models.demo import default_calibration_path


def load_tokenizer(model_dir: Path):
    """The model's own tokenizer (its repository code never runs)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as exc:
        raise NibbleError(f"{model_dir}: cannot load the tokenizer ({exc}); the folder needs tokenizer files") from exc


# tokenizer classes that transformers loads from tokenizer.json as the file says (classes with an __init__ of their
# own, LlamaTokenizer or Qwen2Tokenizer, rebuild the tokenizer from its vocabulary and their own rules)
AS_STORED = ("PreTrainedTokenizerFast", "TokenizersBackend")


class StoredTokenizer:
    """tokenizer.json through the ``tokenizers`` library alone, called as transformers' tokenizer is called on
    calibration text: ``tok(text)["input_ids"]``, no special tokens added."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        if add_special_tokens:
            raise ValueError("calibration text is tokenized without special tokens")
        # encode_batch lets go of Python's interpreter lock while it works (the app counts beside its window)
        return {"input_ids": self._tok.encode_batch([text], add_special_tokens=False)[0].ids}


def calibration_tokenizer(model_dir: Path):
    """What cuts calibration text into ids for ``model_dir``: the same ids as its transformers tokenizer. Where
    transformers would load tokenizer.json as stored (the class Llama 3 and Nibble's demo declare, no
    add_prefix_space override), the ``tokenizers`` library reads it directly, without importing transformers
    (seconds on some machines); otherwise transformers' own tokenizer (:func:`load_tokenizer`)."""
    model_dir = Path(model_dir)
    path = model_dir / "tokenizer.json"
    try:
        tc = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tc = None
    if path.is_file() and isinstance(tc, dict) and tc.get("tokenizer_class") in AS_STORED \
            and tc.get("add_prefix_space") is None:
        try:
            return StoredTokenizer(path)
        except Exception:  # a file the library cannot read: transformers says what is wrong with it
            pass
    return load_tokenizer(model_dir)


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
    return len(calibration_tokenizer(model_dir)(text, add_special_tokens=False)["input_ids"])


def fit_samples(tokens: int, samples: int, seqlen: int) -> int:
    """The most samples of ``seqlen`` tokens, at most ``samples``, that ``tokens`` of text hold (0: not one)."""
    return max(0, min(samples, tokens // max(seqlen, 1)))


def main(argv: list[str]) -> dict:
    """``python -m engine.models.calibration MODEL [TEXT]``: the text's file and token count, as one JSON line
    (``{"error": ...}`` for a problem the user can fix). The app counts in this child process at ``nice 10``:
    writing the demo's dialogues and tokenizing keep a core busy for a fraction of a second, beside the
    window's own thread."""
    from engine.models import resolve

    resolve.NAMES_FROM_CHILD = True  # transformers' names as the app keeps them, not an import of torch here
    try:
        model = resolve.resolve_model_path(argv[0])
        text = argv[1] if len(argv) > 1 and argv[1] else None
        return {"path": str(calibration_file(text, model)), "tokens": count_tokens(model, text)}
    except NibbleError as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    import sys

    print(json.dumps(main(sys.argv[1:])), flush=True)
