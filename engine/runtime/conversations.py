"""Saved conversations: one JSON file each in Nibble's data folder, with the model it was held with and
its settings, so a conversation reopened later continues where it stopped.

Writes are atomic (a temporary file renamed over the old one); a file that cannot be read is left alone
and named in a one-line error when opened.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from engine.core.errors import NibbleError
from engine.core.outputs import temp_path
from engine.models.library import data_dir
from engine.runtime.chat import ChatSettings

_VERSION = 1
_ROLES = ("user", "assistant")


def conversations_dir() -> Path:
    return data_dir() / "conversations"


@dataclass(frozen=True)
class SavedConversation:
    path: Path
    title: str
    model: str  # the model file or folder it was held with
    saved: str  # ISO 8601, UTC
    history: list[dict] = field(default_factory=list)
    settings: ChatSettings = field(default_factory=ChatSettings)


def title_of(history: list[dict]) -> str:
    """The first line of the first user turn, shortened: what the list of conversations shows."""
    first = next((m["content"] for m in history if m.get("role") == "user"), "")
    line = first.strip().splitlines()[0] if first.strip() else "(empty conversation)"
    return line if len(line) <= 60 else line[:59] + "…"


def save_conversation(history: list[dict], *, model: str, settings: ChatSettings | None = None,
                      path: str | os.PathLike | None = None) -> Path:
    """Write ``history`` (user / assistant turns) to ``path`` (default: a new file in
    :func:`conversations_dir`) and return the path."""
    if not history:
        raise NibbleError("the conversation is empty; say something before saving it")
    folder = conversations_dir()
    if path is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}-{uuid.uuid4().hex[:6]}.json"
    path = Path(path)
    data = {
        "version": _VERSION,
        "title": title_of(history),
        "model": str(model or ""),
        "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(settings or ChatSettings()),
        "history": [{"role": m["role"], "content": m["content"]} for m in history],
    }
    tmp = temp_path(path, "save")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NibbleError(f"cannot save the conversation to {path} ({exc.strerror}); "
                          "free some space or check the folder's permissions") from None
    return path


def load_conversation(path: str | os.PathLike) -> SavedConversation:
    """Read a saved conversation; a file that is not one is refused in one line naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NibbleError(f"cannot read the conversation {path} ({exc.strerror})") from None
    except ValueError:
        raise NibbleError(f"{path} is not a saved conversation (not valid JSON); delete it or restore it") from None
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list) or not all(
            isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str) for m in history):
        raise NibbleError(f"{path} is not a saved conversation (no list of user and assistant turns); "
                          "delete it or restore it")
    known = {f.name for f in fields(ChatSettings)}
    raw = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    try:
        settings = ChatSettings(**{k: v for k, v in raw.items() if k in known})
        settings.stop = tuple(settings.stop or ())
    except TypeError:
        settings = ChatSettings()
    return SavedConversation(path, str(data.get("title") or title_of(history)), str(data.get("model") or ""),
                             str(data.get("saved") or ""), [dict(m) for m in history], settings)


def list_conversations(folder: str | os.PathLike | None = None) -> list[SavedConversation]:
    """The saved conversations, the most recently saved first; files that cannot be read are left out."""
    folder = Path(folder) if folder is not None else conversations_dir()
    out = []
    for p in folder.glob("*.json") if folder.is_dir() else ():
        try:
            out.append(load_conversation(p))
        except NibbleError:
            continue
    return sorted(out, key=lambda c: (c.saved, c.path.name), reverse=True)


def delete_conversation(path: str | os.PathLike) -> None:
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        raise NibbleError(f"cannot delete the conversation {path} ({exc.strerror})") from None
