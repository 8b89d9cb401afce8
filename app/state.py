"""What the views share: settings, the models the user has worked with, and requests to switch view."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from app import services
from app.services import ORIGINAL, demo_dir, kind_of  # noqa: F401  (the views' model helpers)
from app.settings import RECENT_MODELS, Setting

RECENT_LIMIT = 12
DEMO_NAME = "Nibble demo model"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A model the app can open: an original (Hugging Face folder) or an output (GGUF file, AWQ folder)."""

    path: str
    kind: str  # one of services.MODEL_KINDS
    name: str = ""
    origin: str = ""  # for outputs: the original it was made from
    qtype: str = ""

    @property
    def label(self) -> str:
        name = self.name or pathlib.Path(self.path).name
        extra = f" [{self.qtype}]" if self.qtype else ""
        return f"{name}{extra} — {self.kind}"


class AppState(QObject):
    """Settings and the model catalogue. Views listen to ``models_changed`` and call ``open_in``."""

    models_changed = Signal()
    open_requested = Signal(str, object)  # view name, payload (dict)

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.settings = settings or QSettings()
        self._listing: list[ModelEntry] | None = None  # models() while models_changed is being delivered

    # -- settings ----------------------------------------------------------------------------------

    def get(self, setting: Setting) -> Any:
        """The stored value of ``setting`` (one of app.settings), or its default."""
        try:
            if setting.type is None:
                v = self.settings.value(setting.key, setting.default)
            else:
                v = self.settings.value(setting.key, setting.default, type=setting.type)
        except (TypeError, ValueError):
            return setting.default
        return setting.default if v is None else v

    def put(self, setting: Setting, value: Any) -> None:
        self.settings.setValue(setting.key, value)

    # -- models ------------------------------------------------------------------------------------

    def _recent(self) -> list[dict]:
        try:
            items = json.loads(self.get(RECENT_MODELS))
        except ValueError:
            items = []
        return [i for i in items if isinstance(i, dict) and "path" in i] if isinstance(items, list) else []

    def add_model(self, entry: ModelEntry) -> None:
        items = [i for i in self._recent() if i["path"] != entry.path]
        items.insert(0, dataclasses.asdict(entry))
        self.put(RECENT_MODELS, json.dumps(items[:RECENT_LIMIT]))
        try:  # the library is a convenience: never let it stop the work
            services.record_in_library(entry.path, entry.kind, name=entry.name, origin=entry.origin, qtype=entry.qtype)
        except Exception as exc:
            logging.getLogger(__name__).warning("could not record %s in the library: %s", entry.path, exc)
        self._changed()

    def forget_model(self, path: str) -> None:
        """Take ``path`` out of the engine's library and off the recent list (its files stay); a NibbleError
        (nothing changed) for an original whose outputs are still listed."""
        services.forget_model(path)
        items = [i for i in self._recent() if not same_path(i["path"], path)]
        self.put(RECENT_MODELS, json.dumps(items))
        self._changed()

    def _changed(self) -> None:
        """Tell the views; the pickers that list the models in answer (five of them) share one reading of the
        library and the recent list, not one each (about 5 ms each, on the UI thread)."""
        self._listing = self.models()
        try:
            self.models_changed.emit()
        finally:
            self._listing = None

    def recent_models(self) -> list[ModelEntry]:
        fields = {f.name for f in dataclasses.fields(ModelEntry)}
        out = []
        for i in self._recent():
            if pathlib.Path(i["path"]).exists():
                out.append(ModelEntry(**{k: v for k, v in i.items() if k in fields}))
        return out

    def models(self) -> list[ModelEntry]:
        """Every model the user can pick: the demo, the library's entries, recent ones; no duplicates."""
        if self._listing is not None:
            return list(self._listing)
        seen: set[str] = set()
        out: list[ModelEntry] = []

        def add(e: ModelEntry) -> None:
            key = str(pathlib.Path(e.path).resolve())
            if key not in seen:
                seen.add(key)
                out.append(e)

        known = {str(pathlib.Path(e.path).resolve()): e for e in library_models()}
        for e in self.recent_models():  # what the library recorded (original, type) fills in a recent entry
            lib = known.get(str(pathlib.Path(e.path).resolve()))
            if lib is not None and lib.kind == e.kind:
                e = dataclasses.replace(e, name=e.name or lib.name, origin=e.origin or lib.origin,
                                        qtype=e.qtype or lib.qtype)
            add(e)
        for e in known.values():
            add(e)
        d = demo_dir()
        if d is not None:
            add(ModelEntry(str(d), ORIGINAL, name=DEMO_NAME))
        return out

    def open_in(self, view: str, **payload) -> None:
        self.open_requested.emit(view, payload)


def same_path(a: str | None, b: str | None) -> bool:
    """Whether two paths name the same file or folder (both given)."""
    return bool(a) and bool(b) and pathlib.Path(a).resolve() == pathlib.Path(b).resolve()


def library_models() -> list[ModelEntry]:
    """The engine library's originals and outputs, as entries the pickers show."""
    try:
        entries = services.library_entries()
    except (services.NibbleError, OSError):  # a damaged or locked library: the app keeps to its recent list
        return []
    paths = {e.id: e.path for e in entries}
    return [ModelEntry(e.path, e.kind, e.name or "", paths.get(e.source or "", ""), e.type or "") for e in entries]
