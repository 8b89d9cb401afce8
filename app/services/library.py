"""Models on disk, Nibble's library of them, and handing outputs on (the Hub, Ollama, LM Studio)."""

from __future__ import annotations

import pathlib

from engine.core.errors import NibbleError
from engine.models.library import Entry as LibraryEntry
from engine.models.resolve import ORIGINAL, model_kind


# -- models ----------------------------------------------------------------------------------------


def kind_of(path: str | pathlib.Path) -> str:
    """What ``path`` holds (ORIGINAL, GGUF or AWQ); a path that is none of them yet counts as an original."""
    try:
        return model_kind(pathlib.Path(path))
    except (NibbleError, OSError):
        return ORIGINAL


def demo_dir() -> pathlib.Path | None:
    """The bundled demo model's folder, when this build has one."""
    from engine.core.resources import DEMO_DIR

    return DEMO_DIR if (DEMO_DIR / "config.json").is_file() else None


def library_entries() -> list[LibraryEntry]:
    """The engine library's originals and outputs whose files are still there."""
    from engine.models import library

    return [e for e in library.list_entries() if not e.missing]


def record_in_library(path: str, kind: str, *, name: str = "", origin: str = "", qtype: str = "") -> None:
    """Add a model to the engine's library (an output with the original it was made from)."""
    from engine.models import library

    lib = library.default()
    if kind == ORIGINAL:
        lib.record_original(path, name=name or None)
    elif origin:
        lib.record_output(path, kind=kind, source_path=origin, type=qtype or kind)
    else:
        lib.add_entry(path, kind, type=qtype or None)


def library_file() -> pathlib.Path:
    """The library's file, which the app and the `nibble` command both write."""
    from engine.models import library

    return library.library_path()


def library_entry(path: str) -> LibraryEntry | None:
    """The library's entry for ``path`` (None: not in the library)."""
    from engine.models import library

    return library.default().find_path(path)


def forget_model(path: str) -> None:
    """Remove ``path``'s library entry; its files stay where they are. An original whose outputs the library
    still lists is kept (they would lose their link to it): a one-line NibbleError says so."""
    from engine.models import library

    lib = library.default()
    entry = lib.find_path(path)
    if entry is None:
        return
    made = [e for e in lib.outputs_of(entry.id) if not e.missing]
    if made:
        names = ", ".join(pathlib.Path(e.path).name for e in made[:3]) + (", …" if len(made) > 3 else "")
        raise NibbleError(f"{entry.name} is the original of {names}; forget or delete those first, "
                          "so that they keep their original")
    lib.remove_entry(entry.id)


def why_not_deletable(path: str) -> str | None:
    """Why Nibble will not delete ``path``'s files (None: it will, after asking)."""
    from engine.models import library

    lib = library.default()
    entry = lib.find_path(path)
    if entry is None:
        return f"{pathlib.Path(path).name} is not in Nibble's library; Nibble deletes only the outputs it made"
    return lib.deletable(entry)


def delete_model(path: str) -> pathlib.Path:
    """Delete an output Nibble made (its file or AWQ folder) and its library entry."""
    from engine.models import library

    lib = library.default()
    entry = lib.find_path(path)
    if entry is None:
        raise NibbleError(f"{path} is not in Nibble's library; Nibble deletes only the outputs it made")
    return lib.delete_output(entry.id)


# -- handing outputs on: the Hub, Ollama, LM Studio ------------------------------------------------


def parse_split_size(text: str) -> int:
    """A split size as typed ("50GB", "3900MiB", bytes); a NibbleError naming the split size otherwise."""
    from engine.core.units import parse_size

    return parse_size(text, "split size")


def publish(path: str, repo_id: str, *, private: bool, split_bytes: int, reporter):
    """Upload one output with its model card to ``repo_id``, with the Hub token the user saved (never shown).
    Returns what was published (``url``, ``files``, ``created``)."""
    from huggingface_hub.utils import disable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    from engine.pipelines.publish import publish as run

    hf_logging.set_verbosity_error()  # Nibble says what happened, once
    disable_progress_bars()
    return run([path], repo_id, private=private, split_bytes=split_bytes, reporter=reporter)


def use_in_ollama(path: str):
    """Write a Modelfile beside the GGUF and import it into Ollama when installed; ``.message`` says which."""
    from engine.pipelines.handoff import use_in_ollama as run

    return run(path)


def use_in_lmstudio(path: str):
    """Place the GGUF in LM Studio's models folder (a link, or a copy); ``.message`` says where."""
    from engine.pipelines.handoff import use_in_lmstudio as run

    return run(path)
