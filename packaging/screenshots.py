"""Screenshots of every view for docs/screenshots/, taken on the demo model.

    xvfb-run -s "-screen 0 1280x800x24" python3 packaging/screenshots.py [--model DIR] [--out docs/screenshots]
    xvfb-run -a -s "-screen 0 1600x1000x24" python3 packaging/screenshots.py --only chat --size 900x600 --appearance dark

Drives the real app: quantizes the model to Q4_K_M through the wizard, chats with the result, compares
it with the original, opens the analysis of one tensor, and grabs each view at 1280×720 (``--size``); then
the Library's context menu of the output (the whole screen, as a menu is a window of its own) and its Publish
dialog. ``--only chat`` takes the chat view alone (on a Q8_0 GGUF made directly, no wizard); ``--appearance``
forces the light or dark palette. Shots of another size or palette get it in their name (chat-900x600-dark).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def wait_until(app, cond, timeout=300.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.01)
    return False


def settle(app, seconds=0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def chat_shot(app, win, gguf: str, grab) -> None:
    """Two questions to the model, then a reply with Markdown (a list, bold, code) as a saved one would show."""
    from app.state import ModelEntry

    chat = win.views["Chat"]
    win.show_view("Chat")
    chat.picker.set_model(ModelEntry(gguf, "gguf"))
    chat.temperature.setValue(0.0)
    for question in ("What is 17 plus 25?", "How many grams are in 3 kilograms?"):
        chat.input.setPlainText(question)
        chat.send()
        wait_until(app, lambda: not chat.is_busy(), 120)
    chat.conversation.history += [
        {"role": "user", "content": "Show me how to add two numbers in Python."},
        {"role": "assistant", "content": "Use the **+** operator:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
                                         "- `add(17, 25)` gives **42**\n- it works for floats too"},
    ]
    chat._render()
    chat._update_buttons()
    grab("chat")


def compare_shots(app, win, model: pathlib.Path, quantized: str | None, grab) -> None:
    """Compare: one prompt with the heat strip and the eval; a task set and one of its differing answers;
    the context sweep with the memory per KV cache type; speed like with like."""
    cmp_view = win.views["Compare"]
    win.show_view("Compare")
    if quantized:
        cmp_view.open_payload({"original": str(model), "quantized": quantized})
    cmp_view.prompt.setPlainText("What is the capital of France?")
    cmp_view.run_compare()
    wait_until(app, lambda: cmp_view.job is None, 300)
    if cmp_view.eval_btn.isEnabled():
        cmp_view.eval_chunks.setValue(8)
        cmp_view.run_eval()
        wait_until(app, lambda: not cmp_view.is_busy(), 600)
    grab("compare")
    if not quantized:
        return
    win.resize(1280, 960)  # room for the plots and tables below the answers
    tasks = cmp_view.tasks
    cmp_view.show_panel(tasks)
    tasks.questions.setValue(100)  # enough for the answers a Q3_K_M of the demo changes to show
    tasks.run()
    wait_until(app, lambda: tasks.job is None, 600)
    grab("compare-tasks")
    if tasks.differing.count():
        tasks.differing.itemClicked.emit(tasks.differing.item(0))
    elif tasks.result is not None and tasks.result.items:  # all alike: the answer the quantized model doubted most
        cmp_view.show_answer(max(tasks.result.items, key=lambda a: max(a.kld_per_token, default=0.0)))
    grab("compare-heat")
    ctx = cmp_view.context
    cmp_view.show_panel(ctx)
    wait_until(app, lambda: ctx.plan is not None, 120)
    for n, box in ctx.length_boxes.items():
        box.setChecked(n <= 512)
    ctx.windows.setValue(2)
    ctx.run()
    wait_until(app, lambda: ctx.job is None, 600)
    grab("compare-context")
    speed = cmp_view.speed
    cmp_view.show_panel(speed)
    speed.run()
    wait_until(app, lambda: speed.job is None, 600)
    grab("compare-speed")
    win.resize(1280, 720)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the demo model)")
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--size", default="1280x720", help="window size, WIDTHxHEIGHT")
    ap.add_argument("--appearance", choices=("system", "light", "dark"), default="system")
    ap.add_argument("--only", choices=("chat",), help="take only this view's shot")
    ap.add_argument("--quantized", help="a GGUF made from --model: skip Quantize and Chat, take the Compare shots only")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    suffix = "".join(f"-{v}" for v in (args.size if args.size != "1280x720" else "",
                                       args.appearance if args.appearance != "system" else "") if v)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="nibble-shots-"))
    os.environ.setdefault("NIBBLE_HOME", str(work / "home"))

    from PySide6.QtCore import QSettings

    from app.main import create_app
    from app.state import AppState, ModelEntry, demo_dir
    from app.window import MainWindow

    app = create_app()
    model = pathlib.Path(args.model) if args.model else demo_dir()
    if model is None:
        print("no demo model in this build; pass --model DIR", file=sys.stderr)
        return 2
    win = MainWindow(AppState(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)))
    win.apply_appearance(args.appearance)
    win.resize(width, height)
    win.show()
    shots = []

    def grab(name: str) -> None:
        settle(app)
        path = out / f"{name}{suffix}.png"
        win.grab().save(str(path))
        shots.append(path)

    if args.only == "chat" or args.quantized:
        if args.only == "chat":
            from engine.gguf.quantize import quantize

            gguf = work / f"{model.name}-Q8_0.gguf"
            quantize(model, "Q8_0", gguf)
            chat_shot(app, win, str(gguf), grab)
        else:
            compare_shots(app, win, model, args.quantized, grab)
        for s in shots:
            print(s)
        win.close()
        return 0

    # Quantize: model, format and type, run, done
    wiz = win.views["Quantize"]
    win.show_view("Quantize")
    wiz.model_page.tabs.setCurrentIndex(3)
    wiz.model_page.choose(ModelEntry(str(model), "original", name=model.name))
    grab("quantize-1-model")
    wiz.next()
    page = wiz.format_page
    page.select_type(args.type)
    wait_until(app, lambda: page.plan is not None or bool(page.plan_error), 120)
    wait_until(app, lambda: bool(page.devices), 60)
    page.output.setText(str(work / f"{model.name}-{args.type}.gguf"))
    grab("quantize-2-type")
    # the best mix for the selected type's size, predicted before anything is written
    page.mix.setChecked(True)
    page.mix.use_reference_size()
    page.mix.start_preview()
    wait_until(app, lambda: page.mix.preview is not None, 600)
    grab("quantize-2-mix")
    page.mix.setChecked(False)
    # several types at once (a queue), and AWQ with its calibration fields
    page.select_types(["Q8_0", args.type])
    grab("quantize-2-queue")
    page.awq_radio.setChecked(True)
    wait_until(app, lambda: page.options.text is not None or bool(page.options.text_error), 120)
    grab("quantize-2-awq")
    page.gguf_radio.setChecked(True)
    page.select_type(args.type)
    page.output.setText(str(work / f"{model.name}-{args.type}.gguf"))
    page.imatrix_mode.setCurrentIndex(1)  # with an importance matrix: long enough to catch it running
    wiz.start_run()
    bar = wiz.run_page.bar
    job = wiz.run_page.job
    wait_until(app, lambda: job.stage == "imatrix" and bar.maximum() > 0 and bar.value() > bar.maximum() // 4
               or not wiz.run_page.is_running(), 300)
    grab("quantize-3-run")
    wait_until(app, lambda: wiz.step() == 3 or not wiz.run_page.is_running(), 600)
    grab("quantize-4-done")
    quantized = wiz.done_page.output.path if wiz.done_page.output else None

    # Chat with the quantized model
    if quantized:
        chat_shot(app, win, quantized, grab)

    compare_shots(app, win, model, quantized, grab)

    # Analysis of one tensor
    an = win.views["Analysis"]
    win.show_view("Analysis")
    if quantized:
        an.open_payload({"original": str(model), "quantized": quantized})
        wait_until(app, lambda: an.current_stats is not None and bool(an.layer_rows), 300)
    grab("analysis")

    lib = win.views["Library"]
    win.show_view("Library")
    if quantized:
        lib.select_path(quantized)
    grab("library")
    if quantized:  # the context menu of an output, and the Publish dialog
        rect = lib.tree.visualItemRect(lib.tree.currentItem())
        menu = lib.menu_for(lib.selected())
        menu.popup(lib.tree.viewport().mapToGlobal(rect.center()))
        settle(app)
        g = win.frameGeometry()
        shot = app.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height())
        shot.save(str(out / "library-menu.png"))
        shots.append(out / "library-menu.png")
        menu.close()
        dlg = lib.actions.publish(quantized)
        dlg.repo.setText("you/demo-GGUF")
        settle(app)
        dlg.grab().save(str(out / "library-publish.png"))
        shots.append(out / "library-publish.png")
        dlg.close()
    for s in shots:
        print(s)
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
