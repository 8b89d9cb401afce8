"""Nibble's library: the models a user started from and everything made from them.

One JSON file in Nibble's data folder (``NIBBLE_HOME``, else the per-user data folder of the platform)
lists entries: an *original* (a Hub model or a local folder) and its *outputs* (GGUF files, AWQ
folders), each with where it came from, its quantization type, when it was made and what was measured
(file size, KL divergence, perplexity, task scores...). The app reopens it on start; quantize and eval
call :func:`record_output` and :func:`update_figures`.

Writes are atomic (a temporary file renamed over the old one) and serialised with a lock file, so the
GUI and a CLI child process can both write. Removing an entry never deletes a file. An entry whose file
is gone is listed with ``missing=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from engine.core.resources import data_dir  # noqa: F401  (the one per-user data folder)

from engine.core.errors import NibbleError
from engine.models.resolve import MODEL_KINDS

KINDS = MODEL_KINDS
_VERSION = 1


def outputs_dir() -> Path:
    """Where quantized models go unless the user picks another folder: ``NIBBLE_OUTPUTS`` if set, else
    ``NIBBLE_HOME``/outputs if that is set, else a "Nibble" folder in the user's documents (or home). Never
    inside Nibble's installation, whose files a reinstall replaces."""
    if os.environ.get("NIBBLE_OUTPUTS"):
        return Path(os.environ["NIBBLE_OUTPUTS"]).expanduser()
    if os.environ.get("NIBBLE_HOME"):
        return data_dir() / "outputs"
    home = Path.home()
    docs = Path(os.environ.get("XDG_DOCUMENTS_DIR") or home / "Documents")
    return (docs if docs.is_dir() else home) / "Nibble"


def library_path() -> Path:
    return data_dir() / "library.json"


@dataclass
class Entry:
    """One model in the library."""

    id: str
    kind: str  # "original", "gguf" or "awq"
    path: str  # absolute path of the file or folder
    name: str  # what to call it: the Hub id or the file/folder name
    source: str | None = None  # id of the entry it was made from
    type: str | None = None  # quantization type, e.g. "Q4_K_M" or "awq-w4-g128"
    created: str = ""  # ISO 8601, UTC
    figures: dict = field(default_factory=dict)  # measured: file_size, kld, ppl, top1, task scores...
    hub_id: str | None = None  # the Hub repository an original came from
    missing: bool = False  # computed on reading: the file or folder is gone

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("missing")
        return data


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Library:
    """The library file at ``path`` (default: :func:`library_path`)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else library_path()
        self._lock = FileLock(str(self.path) + ".lock", timeout=30)

    # --- file ---------------------------------------------------------------------------------------
    def _read(self) -> list[Entry]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            known = {f.name for f in fields(Entry)} - {"missing"}
            entries = [Entry(**{k: v for k, v in raw.items() if k in known}) for raw in data.get("entries", [])]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise NibbleError(
                f"the library file {self.path} is damaged ({type(exc).__name__}); move it away and Nibble starts a new one"
            ) from None
        for entry in entries:
            entry.missing = not Path(entry.path).exists()
        return entries

    def _write(self, entries: list[Entry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": _VERSION, "entries": [e.to_json() for e in entries]}
        fd, tmp = tempfile.mkstemp(prefix=".library-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- entries ------------------------------------------------------------------------------------
    def list_entries(self, kind: str | None = None) -> list[Entry]:
        """All entries, oldest first (``kind`` filters)."""
        with self._lock:
            entries = self._read()
        return [e for e in entries if kind is None or e.kind == kind]

    def get(self, entry_id: str) -> Entry:
        for entry in self.list_entries():
            if entry.id == entry_id:
                return entry
        raise NibbleError(f"no library entry '{entry_id}' in {self.path}; `nibble models` lists them")

    def find_path(self, path: str | os.PathLike) -> Entry | None:
        target = str(Path(path).expanduser().resolve())
        return next((e for e in self.list_entries() if e.path == target), None)

    def add_entry(
        self,
        path: str | os.PathLike,
        kind: str,
        *,
        name: str | None = None,
        source: str | None = None,
        type: str | None = None,
        figures: dict | None = None,
        hub_id: str | None = None,
    ) -> Entry:
        """Add a model; a path already in the library is updated instead of listed twice."""
        if kind not in KINDS:
            raise NibbleError(f"unknown library kind '{kind}': use one of {', '.join(KINDS)}")
        full = Path(path).expanduser().resolve()
        with self._lock:
            entries = self._read()
            if source is not None and not any(e.id == source for e in entries):
                raise NibbleError(f"no library entry '{source}' to record as the source of {full.name}")
            entry = next((e for e in entries if e.path == str(full)), None)
            if entry is None:
                entry = Entry(
                    id=uuid.uuid4().hex[:12],
                    kind=kind,
                    path=str(full),
                    name=name or hub_id or full.name,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )
                entries.append(entry)
            entry.kind = kind
            entry.name = name or entry.name
            entry.source = source if source is not None else entry.source
            entry.type = type if type is not None else entry.type
            entry.hub_id = hub_id if hub_id is not None else entry.hub_id
            entry.figures = {**entry.figures, **(figures or {})}
            entry.missing = not full.exists()
            self._write(entries)
        return entry

    def update_figures(self, entry_id: str, figures: dict) -> Entry:
        """Merge measured figures into an entry (a key set to None is removed)."""
        with self._lock:
            entries = self._read()
            entry = next((e for e in entries if e.id == entry_id), None)
            if entry is None:
                raise NibbleError(f"no library entry '{entry_id}' in {self.path}")
            for key, value in figures.items():
                if value is None:
                    entry.figures.pop(key, None)
                else:
                    entry.figures[key] = value
            self._write(entries)
        return entry

    def remove_entry(self, entry_id: str) -> None:
        """Forget an entry (its file stays on disk); outputs made from it keep their record."""
        with self._lock:
            entries = self._read()
            if not any(e.id == entry_id for e in entries):
                raise NibbleError(f"no library entry '{entry_id}' in {self.path}")
            entries = [e for e in entries if e.id != entry_id]
            self._write(entries)

    def deletable(self, entry: Entry) -> str | None:
        """Why ``entry``'s files may not be deleted (None: they may): only an output Nibble made and recorded
        with its original (a GGUF file, an AWQ folder) is Nibble's to delete; an original, anything in the
        Hugging Face cache and a path that holds another entry are never touched."""
        from engine.models.resolve import model_kind

        path = Path(entry.path)
        if entry.kind not in ("gguf", "awq") or not entry.source:
            return f"{path.name} is not an output Nibble made; Forget removes it from the library and leaves it on disk"
        if not path.exists():
            return f"{path} is already gone; Forget removes the entry"
        if "models--" in path.as_posix() and "/snapshots/" in path.as_posix():
            return f"{path} is in the Hugging Face cache; Nibble deletes only the outputs it made"
        try:
            kind = model_kind(path)
        except (NibbleError, OSError):
            kind = None
        if kind != entry.kind:
            return f"{path} no longer holds the {entry.kind.upper()} model Nibble made; check it and delete it yourself"
        for other in self.list_entries():
            if other.id != entry.id and (Path(other.path) == path or path in Path(other.path).parents):
                return f"{path} holds {Path(other.path).name}, which the library also lists; Forget it first"
        return None

    def delete_output(self, entry_id: str) -> Path:
        """Delete an output's file (or AWQ folder) and its entry; refuses, in one line, what is not Nibble's."""
        import shutil

        entry = self.get(entry_id)
        why = self.deletable(entry)
        if why:
            raise NibbleError(why)
        path = Path(entry.path)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            raise NibbleError(f"cannot delete {path} ({exc.strerror}); check its permissions") from None
        self.remove_entry(entry_id)
        return path

    def outputs_of(self, entry_id: str) -> list[Entry]:
        return [e for e in self.list_entries() if e.source == entry_id]

    def record_original(self, path: str | os.PathLike, *, hub_id: str | None = None, name: str | None = None) -> Entry:
        """The entry for a model used as a starting point (added if new)."""
        found = self.find_path(path)
        if found is None:
            size = {"file_size": _size_on_disk(Path(path))} if Path(path).exists() else {}
            return self.add_entry(path, "original", hub_id=hub_id, name=name, figures=size)
        if hub_id and found.hub_id != hub_id:
            return self.add_entry(path, found.kind, hub_id=hub_id)
        return found

    def record_output(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        source_path: str | os.PathLike,
        type: str,
        figures: dict | None = None,
        source_hub_id: str | None = None,
    ) -> Entry:
        """Record a quantized model made from ``source_path``; its size on disk is measured here."""
        origin = self.record_original(source_path, hub_id=source_hub_id)
        out = Path(path)
        measured = {"file_size": _size_on_disk(out)} if out.exists() else {}
        return self.add_entry(out, kind, source=origin.id, type=type, figures={**measured, **(figures or {})})


def default() -> Library:
    return Library()


def add_entry(path, kind, **kw) -> Entry:
    return default().add_entry(path, kind, **kw)


def update_figures(entry_id: str, figures: dict) -> Entry:
    return default().update_figures(entry_id, figures)


def list_entries(kind: str | None = None) -> list[Entry]:
    return default().list_entries(kind)


def remove_entry(entry_id: str) -> None:
    default().remove_entry(entry_id)


def record_output(path, *, kind: str, source_path, type: str, figures: dict | None = None, source_hub_id=None) -> Entry:
    return default().record_output(
        path, kind=kind, source_path=source_path, type=type, figures=figures, source_hub_id=source_hub_id
    )
