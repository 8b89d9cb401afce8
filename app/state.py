"""What the views share: settings, the models the user has worked with, and requests to switch view."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from PySide6.QtCore import QObject, QSettings, Signal

from app import features
from app.features import field

RECENT_LIMIT = 12


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A model the app can open: an original (Hugging Face folder) or an output (GGUF file, AWQ folder)."""

    path: str
    kind: str  # "original", "gguf", "awq"
    name: str = ""
    origin: str = ""  # for outputs: the original it was made from
    qtype: str = ""

    @property
    def label(self) -> str:
        name = self.name or pathlib.Path(self.path).name
        extra = f" [{self.qtype}]" if self.qtype else ""
        return f"{name}{extra} — {self.kind}"


def kind_of(path: str | pathlib.Path) -> str:
    p = pathlib.Path(path)
    if p.is_file() and p.suffix.lower() == ".gguf":
        return "gguf"
    cfg = p / "config.json"
    if cfg.is_file():
        try:
            if json.loads(cfg.read_text(encoding="utf-8")).get("quantization_config", {}).get("quant_method") == "awq":
                return "awq"
        except (OSError, ValueError, AttributeError):
            pass
    return "original"


def demo_dir() -> pathlib.Path | None:
    """The bundled demo model's folder, when this build has one."""
    try:
        from engine.models import demo  # type: ignore[attr-defined]
    except ImportError:
        demo = None
    candidates = []
    if demo is not None and getattr(demo, "DEMO_DIR", None):
        candidates.append(pathlib.Path(demo.DEMO_DIR))
    candidates.append(pathlib.Path(__file__).resolve().parent.parent / "resources" / "demo")
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    return None


class AppState(QObject):
    """Settings and the model catalogue. Views listen to ``models_changed`` and call ``open_in``."""

    models_changed = Signal()
    open_requested = Signal(str, object)  # view name, payload (dict)

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.settings = settings or QSettings()

    # -- settings ----------------------------------------------------------------------------------

    def value(self, key: str, default=None, type_=None):
        if type_ is not None:
            try:
                return self.settings.value(key, default, type=type_)
            except (TypeError, ValueError):
                return default
        v = self.settings.value(key, default)
        return default if v is None else v

    def set_value(self, key: str, value) -> None:
        self.settings.setValue(key, value)

    # -- models ------------------------------------------------------------------------------------

    def _recent(self) -> list[dict]:
        raw = self.settings.value("models/recent", "[]")
        try:
            items = json.loads(raw) if isinstance(raw, str) else []
        except ValueError:
            items = []
        return [i for i in items if isinstance(i, dict) and "path" in i]

    def add_model(self, entry: ModelEntry) -> None:
        items = [i for i in self._recent() if i["path"] != entry.path]
        items.insert(0, dataclasses.asdict(entry))
        self.settings.setValue("models/recent", json.dumps(items[:RECENT_LIMIT]))
        record_in_library(entry)
        self.models_changed.emit()

    def recent_models(self) -> list[ModelEntry]:
        fields = {f.name for f in dataclasses.fields(ModelEntry)}
        out = []
        for i in self._recent():
            if pathlib.Path(i["path"]).exists():
                out.append(ModelEntry(**{k: v for k, v in i.items() if k in fields}))
        return out

    def models(self) -> list[ModelEntry]:
        """Every model the user can pick: the demo, the library's entries, recent ones; no duplicates."""
        seen: set[str] = set()
        out: list[ModelEntry] = []

        def add(e: ModelEntry) -> None:
            key = str(pathlib.Path(e.path).resolve())
            if key not in seen:
                seen.add(key)
                out.append(e)

        for e in self.recent_models():
            add(e)
        for e in library_entries():
            add(e)
        d = demo_dir()
        if d is not None:
            add(ModelEntry(str(d), "original", name="Nibble demo model"))
        return out

    def open_in(self, view: str, **payload) -> None:
        self.open_requested.emit(view, payload)


def record_in_library(entry: ModelEntry) -> None:
    """Add a model to the engine's library (outputs with the original they were made from)."""
    lib = features.engine_function("models.library", "default")
    if lib is None:
        return
    try:
        if entry.kind == "original":
            lib().record_original(entry.path, name=entry.name or None)
        elif entry.origin:
            lib().record_output(entry.path, kind=entry.kind, source_path=entry.origin, type=entry.qtype or entry.kind)
        else:
            lib().add_entry(entry.path, entry.kind, type=entry.qtype or None)
    except Exception as exc:  # the library is a convenience: never let it stop the work
        import logging

        logging.getLogger(__name__).warning("could not record %s in the library: %s", entry.path, exc)


def library_entries() -> list[ModelEntry]:
    """The engine library's originals and outputs, when this build has a library."""
    list_entries = features.engine_function("models.library", "list_entries")
    if list_entries is None:
        return []
    try:
        entries = list(list_entries())
    except Exception:
        return []
    paths = {field(e, "id"): field(e, "path") for e in entries}
    out = []
    for e in entries:
        path = field(e, "path")
        if not path or field(e, "missing", False) or not pathlib.Path(path).exists():
            continue
        out.append(ModelEntry(
            str(path), field(e, "kind") or kind_of(path), field(e, "name") or "",
            paths.get(field(e, "source"), "") or "", field(e, "type") or "",
        ))
    return out
