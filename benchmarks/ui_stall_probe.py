"""How long does the UI thread stall while a quantization and a chat stream run?

A QTimer on the UI thread ticks every 5 ms and records the gap between ticks; the stall is how much
longer than 5 ms a gap was. Meanwhile the Quantize wizard runs a real quantization (a child process)
and the Chat view streams replies from a GGUF (a worker thread), both through the app's own widgets.

    python3 benchmarks/ui_stall_probe.py                # the demo model, or a small model made here
    python3 benchmarks/ui_stall_probe.py --model DIR --type Q4_K_M

Prints one JSON object. Target: the longest stall under 50 ms.

Nibble's own modules are compiled to bytecode first, as an installed app has them: where Python is told not
to write bytecode (PYTHONDONTWRITEBYTECODE), a module imported lazily would otherwise be compiled from source
on first use, holding the interpreter for 10-30 ms. ``--switch-interval`` sets the app process's interpreter
switch interval (``sys.setswitchinterval``, seconds) after the app has set its own, to compare settings.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import threading
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TICK_MS = 5


def _model(args, work: pathlib.Path) -> pathlib.Path:
    if args.model:
        return pathlib.Path(args.model)
    from app.state import demo_dir

    d = demo_dir()
    if d is not None:
        return d
    from tinymodels import make_model

    return make_model(work / "probe-model", "llama3", hidden=512, intermediate=1536, layers=6, heads=8, kv_heads=4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a Hugging Face model folder (default: the demo model)")
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--chat-tokens", type=int, default=64)
    ap.add_argument("--explain", action="store_true", help="print where each thread was during stalls over 30 ms")
    ap.add_argument("--switch-interval", type=float, help="the interpreter's switch interval in seconds "
                    "(default: the app's own)")
    args = ap.parse_args()
    import compileall

    for pkg in ("engine", "app"):
        compileall.compile_dir(str(ROOT / pkg), quiet=1)

    work = pathlib.Path(tempfile.mkdtemp(prefix="nibble-probe-"))
    os.environ.setdefault("NIBBLE_HOME", str(work / "home"))
    model = _model(args, work)

    # The GGUF to chat with is made before the probe starts.
    from engine.gguf.quantize import quantize

    chat_gguf = work / "chat-Q8_0.gguf"
    quantize(model, "Q8_0", chat_gguf)

    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer

    from app.main import create_app, settle_startup_objects
    from app.state import AppState, ModelEntry
    from app.window import MainWindow

    _app = create_app()  # kept referenced while the window lives
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    win = MainWindow(AppState(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)))
    win.show()
    settle_startup_objects()  # as app.main.run_gui does once its window is up
    wiz, chat = win.views["Quantize"], win.views["Chat"]

    gaps: list[tuple[float, float]] = []  # (ms since start, gap ms)
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]
    stacks: dict[str, float] = {}

    def tick():
        now = clock.nsecsElapsed()
        gaps.append((now / 1e6, (now - last[0]) / 1e6))
        last[0] = now

    watching, stop = threading.Event(), threading.Event()
    if args.explain:
        # A watchdog thread samples every thread's stack whenever the UI thread has not ticked for 30 ms: a UI
        # thread waiting in the event loop while a worker runs Python is waiting for the interpreter.
        ui = threading.get_ident()

        def watch():
            while not stop.is_set():
                time.sleep(0.005)
                if watching.is_set() and (clock.nsecsElapsed() - last[0]) / 1e6 > 30:
                    frames = sys._current_frames()
                    if ui in frames:
                        where = "\n".join(f"[{'UI thread' if t == ui else 'worker'}]\n"
                                          + "".join(traceback.format_stack(f)[-6:])
                                          for t, f in frames.items() if t != threading.get_ident())
                        stacks[where] = max(stacks.get(where, 0), (clock.nsecsElapsed() - last[0]) / 1e6)

        threading.Thread(target=watch, daemon=True).start()

    probe = QTimer(interval=TICK_MS)
    probe.timeout.connect(tick)

    state = {"quant_done": False, "replies": 0, "chat_tokens": 0, "failed": None}

    # chat: keep a stream going until the quantization is over
    chat.picker.set_model(ModelEntry(str(chat_gguf), "gguf"))
    chat.max_tokens.setValue(args.chat_tokens)
    chat.temperature.setValue(0.8)

    def ask():
        if state["quant_done"]:
            return
        if chat.is_busy():  # the last reply is still being wound up
            QTimer.singleShot(10, ask)
            return
        chat.conversation.reset()
        chat.input.setPlainText("Tell me about the weather.")
        chat.send()

    def reply_done(text):
        state["replies"] += 1
        state["chat_tokens"] += chat._pieces
        QTimer.singleShot(0, ask)

    chat.reply_finished.connect(reply_done)

    # quantization through the wizard
    wiz.model_page.choose(ModelEntry(str(model), "original"))
    wiz.next()
    wiz.format_page.select_type(args.type)
    wiz.format_page.output.setText(str(work / f"probe-{args.type}.gguf"))

    def finished(*_):
        state["quant_done"] = True

    wiz.run_page.finished.connect(finished)
    wiz.run_page.failed.connect(lambda m: (state.update(failed=m), finished()))

    load_before = round(os.getloadavg()[0], 2)
    started = time.monotonic()
    last[0] = clock.nsecsElapsed()
    watching.set()
    probe.start()
    # the actions are UI-thread work too, so they run inside the measured event loop
    QTimer.singleShot(200, ask)
    QTimer.singleShot(250, wiz.start_run)
    # the app's own event loop, left when both the quantization and the last reply are over
    from PySide6.QtCore import QEventLoop

    loop = QEventLoop()
    check = QTimer(interval=20)
    check.timeout.connect(lambda: (state["quant_done"] and not chat.is_busy()) and loop.quit())
    check.start()
    QTimer.singleShot(600_000, loop.quit)
    loop.exec()
    check.stop()
    probe.stop()
    watching.clear()
    stop.set()
    elapsed = time.monotonic() - started
    win.close()

    stalls = sorted(max(0.0, g - TICK_MS) for _t, g in gaps)
    worst = sorted(gaps, key=lambda x: -x[1])[:5]
    result = {
        "model": str(model),
        "type": args.type,
        "seconds": round(elapsed, 2),
        "ticks": len(gaps),
        "longest_stall_ms": round(stalls[-1], 2) if stalls else None,
        "p99_stall_ms": round(stalls[int(0.99 * (len(stalls) - 1))], 2) if stalls else None,
        "chat_replies": state["replies"],
        "chat_tokens": state["chat_tokens"],
        "quantization_failed": state["failed"],
        "platform": os.environ.get("QT_QPA_PLATFORM"),
        "load_average_before": load_before,
        "switch_interval_s": sys.getswitchinterval(),
        "cpus": os.cpu_count(),
        "worst_at_ms": [[round(t), round(g - TICK_MS, 1)] for t, g in worst],
    }
    for where, ms in sorted(stacks.items(), key=lambda kv: -kv[1])[:5]:
        print(f"--- UI thread busy {ms:.0f} ms in:\n{where}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0 if stalls and stalls[-1] < 50 and not state["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
