"""The job runner: engine commands in a real child process, engine calls in worker threads."""

from __future__ import annotations

import sys
import textwrap
import threading
import time

import psutil
import pytest


from app.jobs import EtaClock, ProcessJob, format_seconds, run_in_thread
from engine.core.errors import NibbleError


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_json_progress_lines_become_signals(qtbot, settings):
    job = ProcessJob(_child("""
        import json, sys, time
        for i in range(1, 4):
            print(json.dumps({"event": "progress", "done": i, "total": 3, "message": f"tensor {i}"}), flush=True)
            time.sleep(0.05)
        print(json.dumps({"event": "log", "message": "wrote it"}), flush=True)
        print("a line that is not JSON", flush=True)
        print(json.dumps({"event": "done", "output": "/tmp/x.gguf", "size_bytes": 123}), flush=True)
    """))
    progress, logs = [], []
    job.progress.connect(lambda d, t, m, eta: progress.append((d, t, m, eta)))
    job.log.connect(logs.append)
    with qtbot.waitSignal(job.succeeded, timeout=20000) as blocker:
        job.start()
    assert [p[:3] for p in progress] == [(1, 3, "tensor 1"), (2, 3, "tensor 2"), (3, 3, "tensor 3")]
    assert progress[0][3] < 0 and progress[-1][3] >= 0  # no ETA until the pace is known
    assert "wrote it" in logs and "a line that is not JSON" in logs
    assert blocker.args[0] == {"event": "done", "output": "/tmp/x.gguf", "size_bytes": 123}


def test_failure_carries_the_engines_words(qtbot, settings):
    job = ProcessJob(_child("""
        import sys
        print("nibble: error: /models/x has no config.json: choose a model folder", file=sys.stderr)
        sys.exit(2)
    """))
    with qtbot.waitSignal(job.failed, timeout=20000) as blocker:
        job.start()
    assert blocker.args == ["/models/x has no config.json: choose a model folder"]


def test_cancel_stops_the_child_and_it_cleans_up(qtbot, settings, tmp_path):
    partial = tmp_path / "out.gguf.partial"
    job = ProcessJob(_child(f"""
        import json, pathlib, signal, sys, time
        p = pathlib.Path({str(partial)!r})
        def stop(*_):
            p.unlink(missing_ok=True)
            sys.exit(2)
        signal.signal(signal.SIGTERM, stop)
        p.write_text("half")
        for i in range(1000):
            print(json.dumps({{"event": "progress", "done": i, "total": 1000}}), flush=True)
            time.sleep(0.05)
    """))
    with qtbot.waitSignal(job.progress, timeout=20000):
        job.start()
    pid = job.pid()
    assert psutil.pid_exists(pid) and partial.exists()
    with qtbot.waitSignal(job.cancelled, timeout=20000):
        job.cancel()
    assert not job.is_running()
    assert not partial.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_child_that_ignores_terminate_is_killed_with_its_children(qtbot, settings, tmp_path):
    job = ProcessJob(_child(f"""
        import json, os, pathlib, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(tmp_path)!r}, ".out.gguf.part.%d.tmp" % os.getpid()).write_text("half")
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(json.dumps({{"event": "progress", "done": 0, "total": 1}}), flush=True)
        time.sleep(60)
    """))
    job._kill_timer.setInterval(300)
    job.leftovers = lambda pid: list(tmp_path.glob(f".out.gguf.*.{pid}.tmp"))
    with qtbot.waitSignal(job.progress, timeout=20000):
        job.start()
    proc = psutil.Process(job.pid())
    qtbot.waitUntil(lambda: bool(proc.children()), timeout=10000)
    grandchild = proc.children()[0]
    with qtbot.waitSignal(job.cancelled, timeout=20000):
        job.cancel()
    assert not job.is_running()
    grandchild.wait(timeout=10)  # killed too, not left running
    assert list(tmp_path.iterdir()) == []


def test_missing_program_fails_with_a_message(qtbot, settings):
    job = ProcessJob(["/nonexistent/python-for-nibble", "-m", "engine"])
    with qtbot.waitSignal(job.failed, timeout=10000) as blocker:
        job.start()
    assert "Could not start" in blocker.args[0]


def test_thread_worker_returns_result_off_the_ui_thread(qtbot, settings):
    ui = threading.get_ident()
    seen = {}

    go = threading.Event()

    def work(x, reporter):
        go.wait(10)
        seen["thread"] = threading.get_ident()
        for i in range(3):
            reporter.progress(i + 1, 3, "step")
            reporter.emit(f"piece{i}")
        return x * 2

    items, progress = [], []
    job = run_in_thread(work, 21, pass_reporter=True, on_item=items.append, on_progress=lambda *a: progress.append(a))
    with qtbot.waitSignal(job.signals.succeeded, timeout=10000) as blocker:
        go.set()
    assert blocker.args == [42]
    assert seen["thread"] != ui
    qtbot.waitUntil(lambda: len(items) == 3)
    assert items == ["piece0", "piece1", "piece2"] and progress[-1] == (3, 3, "step")


def test_thread_worker_cancel_and_errors(qtbot, settings):
    started = threading.Event()

    def until_cancelled(reporter):
        started.set()
        while not reporter.is_cancelled():  # a job that only a cancel ends
            time.sleep(0.01)
        reporter.check_cancel()
        return "finished"

    job = run_in_thread(until_cancelled, pass_reporter=True)
    assert started.wait(60)
    with qtbot.waitSignal(job.signals.cancelled, timeout=60000):
        job.cancel()

    go = threading.Event()

    def bad():
        go.wait(10)
        raise NibbleError("model.gguf is not a GGUF file: choose another")

    job = run_in_thread(bad)
    with qtbot.waitSignal(job.signals.failed, timeout=10000) as blocker:
        go.set()
    assert blocker.args == ["model.gguf is not a GGUF file: choose another"]


def test_an_ended_job_lets_go_of_its_work_on_the_ui_thread(qtbot, settings):
    """Once a job has ended, what it ran on is freed and its signals object is deleted, on the UI thread: a Qt
    object left for the collector could be deleted by a worker thread and deadlock."""
    import weakref

    ui = threading.get_ident()
    freed, shown = {}, []

    class Work:
        pass

    work = Work()
    job = run_in_thread(lambda w: "done", work, on_result=shown.append)
    weakref.finalize(work, lambda: freed.__setitem__("argument", threading.get_ident() == ui))
    signals_gone = []
    job.signals.destroyed.connect(lambda *_: signals_gone.append(threading.get_ident() == ui))
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=10000)
    assert shown == ["done"]
    del work, job
    qtbot.waitUntil(lambda: bool(freed and signals_gone), timeout=10000)
    assert freed == {"argument": True} and signals_gone == [True]


def test_eta_and_time_format(monkeypatch):
    import types

    import app.jobs

    now = [100.0]  # the clock the ETA reads, moved by hand
    monkeypatch.setattr(app.jobs, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    clock = EtaClock()
    assert clock.update(1, 10) is None  # the pace is not known from one unit
    now[0] += 0.5
    assert clock.update(2, 10) == pytest.approx(4.0)  # one unit in 0.5 s since the first: 8 to go
    now[0] += 1.0
    assert clock.update(4, 10) == pytest.approx(3.0)  # three units in 1.5 s: 6 to go at 2 a second
    assert clock.update(10, 10) == 0.0
    assert clock.elapsed() == pytest.approx(1.5)
    assert format_seconds(None) == "—"
    assert format_seconds(42) == "42 s"
    assert format_seconds(125) == "2 min 05 s"
    assert format_seconds(7300) == "2 h 01 min"


def test_machine_probe_child_reports_then_lets_go_of_its_process(qtbot, settings, tmp_path):
    """The device probe's child hands over the devices (the CPU at least), and once it has ended its QProcess
    and the connections holding the caller's callbacks are deleted, not kept for the app's lifetime."""
    import shiboken6

    from app import children, sysinfo

    got = []
    proc = sysinfo.probe_in_child(str(tmp_path), lambda devices, machine: got.append((devices, machine)))
    qtbot.waitUntil(lambda: bool(got), timeout=60000)
    devices, machine = got[0]
    assert any(d.key == "cpu" and d.usable for d in devices)
    total = psutil.virtual_memory().total
    assert machine is not None and 0 < machine.free_ram_bytes <= total
    qtbot.waitUntil(lambda: not shiboken6.isValid(proc), timeout=30000)
    assert proc not in children._children

