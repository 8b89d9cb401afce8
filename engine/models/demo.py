"""Nibble's demo model: where it lives, its chat template, and the texts it is calibrated and evaluated on.

The demo is a small Llama-architecture chat model trained by ``benchmarks/demo_model/train.py`` on
dialogues that :mod:`engine.models.demo_questions` generates (its task: questions with one checkable
answer each). Imports nothing heavy: no torch, no transformers, no Qt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from engine.core.errors import NibbleError
from engine.core.resources import DEMO_DIR, resource_path
from engine.models.demo_questions import heldout_questions, training_dialogues

DEMO_NAME = "demo"


# Chat format (ChatML with a BOS token). The Jinja template shipped in tokenizer_config.json renders
# exactly what render_chat() does; a test checks that.
BOS_TOKEN = "<|bos|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (BOS_TOKEN, IM_START, IM_END, PAD_TOKEN)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def is_demo_name(s: str | Path | None) -> bool:
    """True when a model argument names the bundled demo (``demo``), not a path or Hub id."""
    return isinstance(s, str) and s.strip().lower() == DEMO_NAME


def demo_available() -> bool:
    """True when the shipped demo folder is complete enough to load."""
    return all((DEMO_DIR / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The text the chat template produces for ``messages`` (used to build training text)."""
    parts = [BOS_TOKEN]
    for m in messages:
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)



def is_demo_path(path: str | Path | None) -> bool:
    """True for the shipped demo model's folder (however it was named)."""
    if path is None:
        return False
    if is_demo_name(str(path)):
        return True
    try:
        return Path(path).resolve() == DEMO_DIR.resolve()
    except OSError:
        return False


def is_demo_model(path: str | Path | None) -> bool:
    """True for the demo folder and for what was made from it: a GGUF named ``demo`` with the demo's
    vocabulary, or a folder (an AWQ checkpoint, a copy) with the demo's tokenizer."""
    if is_demo_path(path):
        return True
    if path is None or is_demo_name(str(path)) or not demo_available():
        return False
    p = Path(path)
    try:
        if p.is_file() and p.suffix.lower() == ".gguf":
            from engine.models.inspect import gguf_field, open_gguf

            reader = open_gguf(p)
            if gguf_field(reader, "general.name", "") != DEMO_NAME:
                return False
            vocab = json.loads((DEMO_DIR / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
            tokens = gguf_field(reader, "tokenizer.ggml.tokens", []) or []
            return len(tokens) >= len(vocab) and all(tokens[i] == t for t, i in vocab.items())
        if p.is_dir() and (p / "tokenizer.json").is_file():
            return (p / "tokenizer.json").read_bytes() == (DEMO_DIR / "tokenizer.json").read_bytes()
    except (OSError, ValueError, KeyError, NibbleError):
        return False
    return False


@functools.lru_cache(maxsize=None)
def _generator_tag(seed: int) -> str:
    """A digest of what this version's generator writes (200 dialogues: every category): it changes when a
    new Nibble generates other dialogues, so a text cached by an older one is not taken for the current."""
    text = "".join(render_chat(d) for d in training_dialogues(200, seed))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def calibration_path(n: int = 2400, seed: int = 11) -> Path:
    """A calibration text for the demo model and models trained like it: training-split dialogues in its
    chat format (what it was made for, as general English is not), written once into Nibble's data folder
    (under a name that carries the generator's digest, so the demo shipped with another version of Nibble
    gets its own dialogues).

    AWQ's search and the importance matrix then see the activations the model has when it is used.
    """
    from engine.models.library import data_dir

    path = data_dir() / f"demo-calibration-{n}-{seed}-{_generator_tag(seed)}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("".join(render_chat(d) for d in training_dialogues(n, seed)), encoding="utf-8")
        os.replace(tmp, path)
    return path


def heldout_text(n: int = 600, seed: int = 1) -> str:
    """Held-out dialogues written out in the demo's chat format: the demo model's own evaluation text.

    General English means little to a model that only ever saw these dialogues; its perplexity and
    KL divergence are measured where it is competent.
    """
    parts = []
    for q in heldout_questions(n, seed):
        parts.append(render_chat([{"role": "user", "content": q.text}, {"role": "assistant", "content": q.reply}]))
    return "".join(parts)


def default_calibration_path(model: str | Path | None = None) -> Path:
    """The calibration text used when none is given: the one Nibble ships; for the demo model and what
    was made from it (``engine.models.demo.is_demo_model``), its own training-split dialogues instead."""
    if model is not None:
        if is_demo_model(model):
            return calibration_path()
    return resource_path("calibration.txt")
