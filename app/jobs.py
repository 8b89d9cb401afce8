"""Background work for the app: engine commands in a child process, engine calls in a worker thread.

Nothing slow runs on the UI thread. Two ways out of it:

* :class:`ProcessJob` starts ``python -m engine COMMAND ... --json-progress`` with QProcess and turns the
  JSON lines it prints into signals. Jobs that can crash natively or hold gigabytes (quantization,
  conversion, calibration) go this way; Cancel terminates the child, which cleans up on SIGTERM.
* :func:`run_in_thread` runs a plain engine function on Qt's thread pool and hands its result (or its
  error) back to the UI thread through signals. A :class:`ThreadReporter` gives the function the engine's
  reporter interface (progress, log, cancel check).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import (
    QObject,
    QProcess,
    QProcessEnvironment,
    QRunnable,
    QThreadPool,
    QTimer,
    Signal,
)

from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import CancelToken, Reporter
from engine.core.spawn import child_env, module_argv

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NICE = shutil.which("nice") if sys.platform != "win32" else None


def engine_argv(command: str, *args: str, output: str = "--json-progress") -> list[str]:
    """The argument list (program first) that runs one engine command with JSON output: ``--json-progress``
    (one event a line, for long jobs) or ``--json`` (one result at the end)."""
    return module_argv("engine", command, *args, output)


def command_line(argv: list[str]) -> str:
    """A shell-quoted form of ``argv`` for the log and for copying."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def user_command(argv: list[str]) -> str:
    """The ``nibble`` command a user can copy that does what the engine command ``argv`` (from
    :func:`engine_argv`) does: the same options, without the JSON output meant for the app."""
    i = argv.index("engine") + 1 if "engine" in argv else 0
    args = [a for a in argv[i:] if a not in ("--json-progress", "--json")]
    return command_line(["nibble", *args])


class EtaClock:
    """Estimates the time left from the pace of the units done since the first one finished."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._first: tuple[float, int] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, done: int, total: int) -> float | None:
        """Seconds left, or None while there is not enough to judge by."""
        now = time.monotonic()
        if self._first is None or done < self._first[1]:
            self._first = (now, done)
            return None
        t0, d0 = self._first
        if done <= d0 or total <= 0:
            return None
        rate = (done - d0) / max(now - t0, 1e-6)
        return max(total - done, 0) / rate


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProcessJob(QObject):
    """One engine command in a child process, its JSON progress lines turned into signals.

    Signals: ``progress(done, total, message, eta_seconds or -1)``, ``log(text)``,
    ``succeeded(dict)`` with the final ``done`` event, ``failed(message)`` with the engine's own words,
    ``cancelled()``, and ``ended()`` after any of the last three; ``item(n, of, type)`` when a queue of several
    types moves on to its n-th.
    """

    progress = Signal(int, int, str, float)
    item = Signal(int, int, str)
    log = Signal(str)
    succeeded = Signal(dict)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()

    def __init__(self, argv: list[str], parent: QObject | None = None, cwd: str | os.PathLike | None = None,
                 background: bool = True):
        super().__init__(parent)
        self.argv = list(argv)
        self.background = background
        self.cwd = str(cwd or REPO_ROOT)
        self.clock = EtaClock()
        self.result: dict | None = None
        self.error: str | None = None
        self.error_setting: str | None = None  # the setting the engine's error names (engine.core.errors.SETTINGS)
        self.stage = ""  # the job's current stage, where it names one (e.g. "convert", "quantize")
        self.current_item: tuple[int, int, str] | None = None  # a queue's (n, of, type) now running
        self.shown_command: str | None = None  # how the log shows the command (e.g. the user's `nibble ...`)
        self._stdout_buf = b""
        self._stderr_lines: list[str] = []
        self._other_lines: list[str] = []  # stdout that is not one event a line (a --json result)
        self._cancel_requested = False
        self._finished = False
        self.proc = QProcess(self)
        env = QProcessEnvironment()
        for key, value in child_env(PYTHONUNBUFFERED="1").items():
            env.insert(key, value)
        self.proc.setProcessEnvironment(env)
        self.proc.setWorkingDirectory(self.cwd)
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._on_finished)
        self.proc.errorOccurred.connect(self._on_error)
        self._kill_timer = QTimer(self, singleShot=True, interval=10000)
        self.leftovers: Callable[[int], list[pathlib.Path]] | None = None  # what a killed job leaves behind
        self._kill_timer.timeout.connect(self._kill)

    # -- control -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.clock = EtaClock()
        self.log.emit("$ " + (self.shown_command or command_line(self.argv)))
        argv = self.argv
        if self.background and NICE and shutil.which(argv[0]):
            argv = [NICE, "-n", "10", *argv]  # the job yields the CPU to the app (and to the user's other work)
        self.proc.start(argv[0], argv[1:])

    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM: it removes its partial output), kill it if it lingers."""
        if self._finished or self.proc.state() == QProcess.ProcessState.NotRunning:
            return
        self._cancel_requested = True
        self.log.emit("Cancelling…")
        self.proc.terminate()
        self._kill_timer.start()

    def is_running(self) -> bool:
        return self.proc.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int:
        return int(self.proc.processId())

    def _kill(self) -> None:
        """The job ignored SIGTERM: kill it and everything it started, and remove what it left."""
        if not self.is_running():
            return
        self.log.emit("The job did not stop in time; killing it.")
        pid = self.pid()
        try:
            import psutil

            for child in psutil.Process(pid).children(recursive=True):
                child.kill()
        except Exception:  # psutil missing or the process already gone
            pass
        self.proc.kill()
        if self.leftovers is not None:
            self.proc.waitForFinished(2000)
            for path in self.leftovers(pid):
                try:
                    path.unlink()
                except OSError:
                    pass

    # -- reading -----------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        self._stdout_buf += bytes(self.proc.readAllStandardOutput())
        *lines, self._stdout_buf = self._stdout_buf.split(b"\n")
        for raw in lines:
            self._handle_line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _read_stderr(self) -> None:
        text = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._stderr_lines.append(line)
                self.log.emit(line)

    def _handle_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except ValueError:
            self._other_lines.append(line)
            self.log.emit(line)
            return
        if not isinstance(event, dict) or "event" not in event:
            self._other_lines.append(line)
            self.log.emit(line)
            return
        kind = event.get("event")
        if kind == "progress":
            done, total = int(event.get("done", 0)), int(event.get("total", 0))
            stage = str(event.get("stage", ""))
            if "item" in event:
                item = (int(event["item"]), int(event.get("items", 0)), str(event.get("item_type", "")))
                if item != self.current_item:
                    self.current_item = item
                    self.item.emit(*item)
            if stage != self.stage:
                self.stage = stage
                self.clock = EtaClock()  # each stage has its own pace
            eta = self.clock.update(done, total)
            self.progress.emit(done, total, str(event.get("message", "")), -1.0 if eta is None else eta)
        elif kind == "log":
            self.log.emit(str(event.get("message", "")))
        elif kind in ("done", "result"):
            self.result = event
        elif kind == "error":
            self.error = str(event.get("message", ""))
            self.error_setting = event.get("setting")
        else:
            self.log.emit(line)

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if self._finished:
            return
        self._finished = True
        self._kill_timer.stop()
        self._read_stdout()
        if self._stdout_buf:
            self._handle_line(self._stdout_buf.decode("utf-8", "replace"))
            self._stdout_buf = b""
        self._read_stderr()
        if self.result is None and self._other_lines:
            try:
                whole = json.loads("\n".join(self._other_lines))
            except ValueError:
                whole = None
            if isinstance(whole, dict):
                self.result = {"event": "done", **whole}
        if self._cancel_requested:
            self.cancelled.emit()
        elif exit_code == 0 and exit_status == QProcess.ExitStatus.NormalExit:
            self.succeeded.emit(self.result or {"event": "done"})
        else:
            self.failed.emit(self._failure_message(exit_code, exit_status))
        self.ended.emit()

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and not self._finished:
            self._finished = True
            self.failed.emit(f"Could not start {self.argv[0]}: {self.proc.errorString()}")
            self.ended.emit()

    def _failure_message(self, exit_code: int, exit_status: QProcess.ExitStatus) -> str:
        if self.error:
            return self.error
        for line in reversed(self._stderr_lines):
            if line.strip().startswith("nibble: error: "):
                return line.strip()[len("nibble: error: "):]
        for line in reversed(self._stderr_lines):
            text = line.strip()
            if text.startswith("nibble: ") and not text.startswith("nibble: note: "):
                text = text[len("nibble: "):]
                return text[len("error: "):] if text.startswith("error: ") else text
        if self._stderr_lines:
            return self._stderr_lines[-1].strip()
        if exit_status == QProcess.ExitStatus.CrashExit:
            return "The job crashed before it could say why (see the log)."
        return f"The job stopped with exit code {exit_code}."


# -- thread workers --------------------------------------------------------------------------------


class WorkerSignals(QObject):
    progress = Signal(int, int, str)
    log = Signal(str)
    item = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()


class ThreadReporter(Reporter):
    """The engine's reporter for a function running in a worker thread; emits Qt signals."""

    def __init__(self, signals: WorkerSignals, token: CancelToken):
        self.signals = signals
        self.token = token

    def progress(self, done: int, total: int, message: str = "", **extra: Any) -> None:
        self.signals.progress.emit(int(done), int(total), str(message))

    def log(self, message: str) -> None:
        self.signals.log.emit(str(message))

    def is_cancelled(self) -> bool:
        return bool(self.token)

    def emit(self, value: Any) -> None:
        """Hand an intermediate value (a streamed token, a partial result) to the UI thread."""
        self.signals.item.emit(value)


class ThreadJob(QRunnable):
    """Runs ``fn(*args, reporter=..., **kwargs)`` (or without reporter) on the thread pool."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, pass_reporter: bool):
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.pass_reporter = pass_reporter
        self.signals = WorkerSignals()
        self.token = CancelToken()
        self.reporter = ThreadReporter(self.signals, self.token)
        self.done = False
        self.result: Any = None  # what fn returned, once it has (for an owner that shuts down before on_result)

    def cancel(self) -> None:
        self.token.cancel()

    def run(self) -> None:  # worker thread
        try:
            if self.pass_reporter:
                result = self.fn(*self.args, reporter=self.reporter, **self.kwargs)
            else:
                result = self.fn(*self.args, **self.kwargs)
        except Cancelled:
            self.signals.cancelled.emit()
        except NibbleError as exc:
            self.signals.failed.emit(str(exc))
        except MemoryError:
            self.signals.failed.emit("Not enough memory for this job; close other programs or pick a smaller model.")
        except Exception as exc:  # a bug: keep the app alive and say what happened
            traceback.print_exc()
            self.signals.failed.emit(f"Internal error ({type(exc).__name__}): {exc}")
        else:
            if self.token:
                self.signals.cancelled.emit()
            else:
                self.result = result
                self.signals.succeeded.emit(result)
        finally:
            self.done = True
            self.signals.ended.emit()


_live_jobs: set[ThreadJob] = set()


def while_current(owner, fn: Callable) -> Callable:
    """``fn`` as a job's callback that is dropped once ``owner._gen`` has moved on (the owner started afresh,
    e.g. on a new model pair), so an earlier job's result never lands in the new state."""
    gen = owner._gen
    return lambda *a: fn(*a) if owner._gen == gen else None


def run_in_thread(
    fn: Callable,
    *args: Any,
    on_result: Callable[[Any], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    on_item: Callable[[Any], None] | None = None,
    on_cancelled: Callable[[], None] | None = None,
    on_end: Callable[[], None] | None = None,
    pass_reporter: bool = False,
    pool: QThreadPool | None = None,
    **kwargs: Any,
) -> ThreadJob:
    """Run ``fn`` off the UI thread; the callbacks run on the UI thread. Returns the job (cancel())."""
    job = ThreadJob(fn, args, kwargs, pass_reporter)
    s = job.signals
    if on_result:
        s.succeeded.connect(on_result)
    if on_error:
        s.failed.connect(on_error)
    if on_progress:
        s.progress.connect(on_progress)
    if on_item:
        s.item.connect(on_item)
    if on_cancelled:
        s.cancelled.connect(on_cancelled)
    if on_end:
        s.ended.connect(on_end)
    _live_jobs.add(job)
    s.ended.connect(lambda: _release(job))
    (pool or QThreadPool.globalInstance()).start(job)
    return job


def _release(job: ThreadJob) -> None:
    """On the UI thread, once the job has ended and its callbacks have run. The pool keeps a reference to every
    job it ran, and the job's signals hold the callbacks (closures over views and widgets) and this one (over
    the job): a cycle through Qt that Python's collector cannot see. So the job lets go of what it ran on and
    what it returned, and its signals object is deleted here, on the UI thread, which drops the callbacks."""
    _live_jobs.discard(job)
    job.fn = job.args = job.kwargs = job.result = None
    job.signals.deleteLater()
