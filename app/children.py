"""Short reads in a child process: ``python -m MODULE ...`` at ``nice 10`` for work whose pure Python would
otherwise hold the app's interpreter (and so the UI thread) for a noticeable while, such as counting a
calibration text's tokens or probing the machine. Longer engine commands with progress go through
:class:`app.jobs.ProcessJob`."""

from __future__ import annotations

import json
from typing import Callable

from PySide6.QtCore import QProcess, QProcessEnvironment

from app.jobs import NICE, REPO_ROOT
from engine.core.spawn import child_env, module_argv

_children: set[QProcess] = set()


def start_module_in_child(module: str, *args: str, on_finished: Callable[[QProcess], None]) -> QProcess:
    """Start ``python -m module args`` at ``nice 10`` with Nibble's environment; ``on_finished(proc)`` runs on the
    UI thread when it has ended, and then the process object is deleted, and with it the connections that hold
    the caller's callbacks. Until then a reference is kept here: the child may outlive the page that asked."""
    proc = QProcess()  # not owned by a widget
    _children.add(proc)
    env = QProcessEnvironment()
    for key, value in child_env().items():
        env.insert(key, value)
    proc.setProcessEnvironment(env)
    proc.setWorkingDirectory(str(REPO_ROOT))

    def finished(*_):
        _children.discard(proc)
        try:
            on_finished(proc)
        finally:
            try:
                proc.deleteLater()
            except RuntimeError:  # the app is closing: Qt has deleted it already
                pass

    proc.finished.connect(finished)
    argv = module_argv(module, *args)
    if NICE:
        argv = [NICE, "-n", "10", *argv]
    proc.start(argv[0], argv[1:])
    return proc


def run_module_in_child(module: str, *args: str, on_result: Callable[[dict], None],
                        on_error: Callable[[str], None]) -> QProcess:
    """``python -m module args`` at ``nice 10`` for a short read whose Python would otherwise hold the app's
    interpreter; its last line of output is one JSON object: ``{"error": message}`` goes to ``on_error``,
    anything else to ``on_result`` (both on the UI thread)."""

    def finished(proc: QProcess) -> None:
        try:
            out = bytes(proc.readAllStandardOutput()).decode("utf-8", "replace").strip().splitlines()
            err = bytes(proc.readAllStandardError()).decode("utf-8", "replace").strip().splitlines()
        except RuntimeError:  # the app is closing
            return
        try:
            data = json.loads(out[-1]) if out else None
        except ValueError:
            data = None
        try:
            if not isinstance(data, dict):
                on_error(f"Internal error ({module} ended without a result): {err[-1] if err else 'no output'}")
            elif "error" in data:
                on_error(str(data["error"]))
            else:
                on_result(data)
        except RuntimeError:  # the page that asked is gone
            pass

    return start_module_in_child(module, *args, on_finished=finished)
