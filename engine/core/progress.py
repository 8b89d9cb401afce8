"""Reporters: how a long job tells progress and learns it should stop.

A job calls ``reporter.progress(done, total, message)`` after each unit of work and
``reporter.check_cancel()`` between units; the latter raises :class:`Cancelled`.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any

from engine.core.errors import Cancelled


class Reporter:
    """Base reporter: ignores progress, never cancels. Subclass or pass as a stub."""

    def progress(self, done: int, total: int, message: str = "", **extra: Any) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def is_cancelled(self) -> bool:
        return False

    def check_cancel(self) -> None:
        if self.is_cancelled():
            raise Cancelled()


class CancelToken:
    """A thread-safe flag that a UI or signal handler sets to stop a job."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


class TextReporter(Reporter):
    """Prints ``[n/N] message`` lines for people at a terminal."""

    def __init__(self, stream: IO[str] | None = None, token: CancelToken | None = None):
        self.stream = stream or sys.stderr
        self.token = token or CancelToken()

    def progress(self, done: int, total: int, message: str = "", **extra: Any) -> None:
        width = len(str(total))
        print(f"[{done:>{width}}/{total}] {message}", file=self.stream, flush=True)

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def is_cancelled(self) -> bool:
        return bool(self.token)


class JsonLinesReporter(Reporter):
    """Prints one JSON object a line: what ``--json-progress`` and the GUI read."""

    def __init__(self, stream: IO[str] | None = None, token: CancelToken | None = None):
        self.stream = stream or sys.stdout
        self.token = token or CancelToken()

    def _emit(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()

    def progress(self, done: int, total: int, message: str = "", **extra: Any) -> None:
        self._emit({"event": "progress", "done": done, "total": total, "message": message, **extra})

    def log(self, message: str) -> None:
        self._emit({"event": "log", "message": message})

    def is_cancelled(self) -> bool:
        return bool(self.token)
