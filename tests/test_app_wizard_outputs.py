"""The Quantize wizard's outputs and choices as a careful user checks them: where files go by default, names
that follow the model until typed, replacing only when asked, types that cannot run, contexts, the memory
summary, a queue of types, and the page at 900x600."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import gguf
import psutil
from PySide6.QtCore import QTimer

from app.services import human_bytes
from app.state import ModelEntry


def _format_page(qtbot, window, model: pathlib.Path, name: str = ""):
    window.show_view("Quantize")
    wiz = window.views["Quantize"]
    wiz.model_page.choose(ModelEntry(str(model), "original", name=name))
    wiz.next_btn.click()
    assert wiz.step() == 1
    qtbot.waitUntil(lambda: wiz.format_page.plan is not None, timeout=60000)
    return wiz, wiz.format_page


def test_save_to_is_nibbles_outputs_folder_never_the_install(qtbot, window, monkeypatch, tmp_path):
    from app.settings import QUANTIZE_OUTPUT_DIR
    from app.state import demo_dir
    from app.views.quantize import options

    demo = demo_dir()
    home = pathlib.Path(os.environ["NIBBLE_HOME"])  # the settings fixture's own, in tmp_path
    window.state.put(QUANTIZE_OUTPUT_DIR, str(demo.parent))  # remembered from an older version: inside the install
    wiz, page = _format_page(qtbot, window, demo, "demo")
    page.select_type("Q4_K_M")
    out = pathlib.Path(page.output.text())
    assert out == home / "outputs" / "demo-Q4_K_M.gguf"
    assert demo.parent not in out.parents and pathlib.Path(__file__).resolve().parent.parent not in out.parents
    opened = []
    monkeypatch.setattr(options.QFileDialog, "getSaveFileName",
                        lambda _parent, _title, start, *a, **k: (opened.append(start), ("", ""))[1])
    page.options.pick_output()
    assert pathlib.Path(opened[0]).parent == home / "outputs"  # the dialog opens in that folder
    # a folder the user picks is remembered for the next model
    other = tmp_path / "mine"
    other.mkdir()
    monkeypatch.setattr(options.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(other / "demo-Q4_K_M.gguf"), "GGUF (*.gguf)"))
    page.options.pick_output()
    page.save_choices()
    assert window.state.get(QUANTIZE_OUTPUT_DIR) == str(other)
    assert page.options.default_folder() == other


def test_the_name_follows_model_and_type_until_the_user_types_one(qtbot, window, tiny_model, tmp_path):
    wiz, page = _format_page(qtbot, window, tiny_model)
    page.select_type("Q4_K_M")
    folder = pathlib.Path(page.output.text()).parent
    assert page.output.text() == str(folder / "tiny-llama-Q4_K_M.gguf")
    page.select_type("Q8_0")
    assert page.output.text() == str(folder / "tiny-llama-Q8_0.gguf")
    page.output.clear()
    qtbot.keyClicks(page.output, str(tmp_path / "mine.gguf"))
    page.select_type("Q6_K")
    assert page.output.text() == str(tmp_path / "mine.gguf")  # typed: it stays
    page.awq_radio.setChecked(True)
    assert page.output.text() == str(tmp_path / "mine")  # AWQ writes a folder
    page.gguf_radio.setChecked(True)
    assert page.output.text() == str(tmp_path / "mine.gguf")
    # another model: its own name (a name typed for the first would replace that model's file)
    second = tmp_path / "second-model"
    shutil.copytree(tiny_model, second)
    wiz.model_page.choose(ModelEntry(str(second), "original"))
    assert page.output.text() == str(tmp_path / "second-model-Q6_K.gguf")


def _answer(qtbot, wiz, button: str) -> None:
    """Click ``button`` of the wizard's question as soon as it is asked (it blocks until answered)."""

    def click():
        box = wiz.confirm
        if box is None or not box.isVisible():
            QTimer.singleShot(20, click)
            return
        next(b for b in box.buttons() if b.text().replace("&", "") == button).click()

    QTimer.singleShot(0, click)


def test_an_existing_output_is_replaced_only_when_the_user_says_so(qtbot, window, tiny_model, tmp_path):
    wiz, page = _format_page(qtbot, window, tiny_model)
    page.select_type("Q8_0")
    out = tmp_path / "tiny-Q8_0.gguf"
    page.output.setText(str(out))
    with qtbot.waitSignal(wiz.run_page.finished, timeout=120000):
        wiz.next_btn.click()
    assert wiz.confirm is None and out.is_file()
    assert wiz.run_page.bar.format() != ""  # "N / N" of the finished job
    first = out.stat().st_mtime_ns
    wiz.back()
    page.output.setText(str(out))
    _answer(qtbot, wiz, "Cancel")
    assert not wiz.start_run()
    assert wiz.step() == 1 and out.stat().st_mtime_ns == first  # nothing started, the file untouched
    _answer(qtbot, wiz, "Replace")
    with qtbot.waitSignal(wiz.run_page.finished, timeout=120000):
        assert wiz.start_run()
        assert wiz.run_page.bar.format() == ""  # nothing left of the last job's count
    assert out.stat().st_mtime_ns != first


def test_types_that_cannot_run_are_disabled_with_the_reason(qtbot, window, tiny_model, tmp_path):
    wiz, page = _format_page(qtbot, window, tiny_model)
    page.select_type("IQ2_XXS")
    assert page.imatrix_mode.currentData() == "calibration" and page.blocker() is None
    page.imatrix_mode.setCurrentIndex(page.imatrix_mode.findData("none"))
    assert not wiz.next_btn.isEnabled()
    assert "IQ2_XXS needs an importance matrix" in wiz.next_btn.toolTip()
    assert "IQ2_XXS needs an importance matrix" in page.type_status.text()
    page.imatrix_mode.setCurrentIndex(page.imatrix_mode.findData("calibration"))
    qtbot.waitUntil(lambda: page.options.text is not None, timeout=60000)
    assert wiz.next_btn.isEnabled()
    short = tmp_path / "short.txt"
    short.write_text("The sky is blue because air scatters blue light. " * 4, encoding="utf-8")  # a few dozen tokens
    page.options.cal_path.setText(str(short))
    page.options.count_text()
    qtbot.waitUntil(lambda: page.options.text is not None and page.options.text.path == str(short), timeout=60000)
    assert not wiz.next_btn.isEnabled() and "not one window of 512" in page.type_status.text()
    gone = tmp_path / "gone.txt"  # counted in a child process: its one-line error comes back to the page
    page.options.cal_path.setText(str(gone))
    page.options.count_text()
    qtbot.waitUntil(lambda: page.options.text_error != "", timeout=60000)
    assert page.options.text is None and page.options.text_error == f"calibration text {gone} not found; check its path"


def test_contexts_stop_at_the_trained_one(qtbot, window, tiny_model, capsys):
    from engine.commands.cli import main

    trained = json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"]
    wiz, page = _format_page(qtbot, window, tiny_model)
    items = [(page.ctx.itemData(i), page.ctx.itemText(i)) for i in range(page.ctx.count())]
    ordinary = [c for c, text in items if "beyond training" not in text]
    assert max(ordinary) == trained and dict(items)[trained].endswith("(trained)")
    assert all(c > trained for c, text in items if "beyond training" in text)
    assert page.context() <= trained  # the default (4,096) is more than it was trained on
    assert main(["estimate", str(tiny_model), "--type", "Q4_K_M", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["types"][0]["settings"]["ctx"] == min(4096, trained)


def test_memory_summary_names_every_part_and_bits_come_from_the_estimate(qtbot, window, tiny_model):
    from engine.estimate import estimate, load_plan

    wiz, page = _format_page(qtbot, window, tiny_model)
    page.select_type("TQ1_0")
    est = estimate(load_plan(tiny_model), "TQ1_0", ctx=page.context(), kv_type=page.kv.currentText())
    run = est.run
    parts = {"weights": run.weights_bytes, "KV cache": run.kv_cache_bytes, "compute buffers": run.compute_bytes,
             "runtime": run.overhead_bytes}
    assert sum(parts.values()) == run.ram_bytes + run.vram_bytes
    text = page.estimate_label.text()
    assert f"<b>{human_bytes(run.ram_bytes + run.vram_bytes)}</b> = " in text
    for name, b in parts.items():
        assert f"{name} {human_bytes(b)}" in text
    # one bits-per-weight figure a type: the column's, the estimate's; no note carries another
    for r in range(page.table.rowCount()):
        assert not re.search(r"\d(\.\d+)? ?bits", page.table.item(r, 5).text()), page.table.item(r, 5).text()
    row = next(r for r in range(page.table.rowCount()) if page.table.item(r, 0).text() == "TQ1_0")
    assert page.table.item(row, 1).text() == f"{est.bits_per_weight:.2f}"


def test_the_type_table_is_whole_at_900x600(qtbot, window, tiny_model):
    window.resize(900, 600)
    wiz, page = _format_page(qtbot, window, tiny_model)
    qtbot.waitUntil(lambda: window.width() <= 900 and window.height() <= 600, timeout=5000)
    t, header = page.table, page.table.horizontalHeader()
    for c in range(t.columnCount() - 1):  # every column but the notes, whole, with its header text
        assert header.sectionViewportPosition(c) + header.sectionSize(c) <= t.viewport().width(), c
        assert header.sectionSize(c) >= header.fontMetrics().horizontalAdvance(t.horizontalHeaderItem(c).text())
    assert t.viewport().height() >= 6 * t.rowHeight(0)
    assert wiz.next_btn.isVisible() and wiz.next_btn.geometry().bottom() <= wiz.height()


def _file_type(path: pathlib.Path) -> int:
    return int(gguf.GGUFReader(path).get_field("general.file_type").contents())


def test_a_queue_converts_once_and_lists_every_output(qtbot, window, tiny_model, tmp_path):
    from engine.gguf.types import find_type

    wiz, page = _format_page(qtbot, window, tiny_model)
    assert page.select_types(["Q8_0", "Q4_0"])
    folder = tmp_path / "queue"
    page.output.setText(str(folder))
    assert "2 types queued" in page.type_status.text()
    stages, titles = [], []
    with qtbot.waitSignal(wiz.run_page.finished, timeout=180000):
        wiz.next_btn.click()
        job = wiz.run_page.job
        job.progress.connect(lambda d, t, _m, _e: stages.append((job.stage, d, t)))
        job.item.connect(lambda *_a: titles.append(wiz.run_page.title.text()))
    assert sum(1 for s, d, t in stages if s == "convert" and d == t) == 1  # converted once
    assert any(t.endswith("1 of 2: Q8_0") for t in titles) and any(t.endswith("2 of 2: Q4_0") for t in titles)
    for name in ("Q8_0", "Q4_0"):
        out = folder / f"tiny-llama-{name}.gguf"
        assert _file_type(out) == find_type(name).ftype  # read back by gguf-py
        assert str(out) in wiz.outputs_label.text()
        assert any(e.path == str(out) and e.qtype == name for e in window.state.models())
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-llama-Q4_0.gguf", "tiny-llama-Q8_0.gguf"]
    first = folder / "tiny-llama-Q8_0.gguf"
    assert wiz.done_page.path_label.text() == str(first)  # the done page's figures are the first output's own
    assert wiz.done_page.size_label.text() == human_bytes(first.stat().st_size)


def _sigterm_pending(pid: int) -> bool:
    """Whether a (stopped) process has a SIGTERM waiting for it, from /proc."""
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone
    pending = int(re.search(r"ShdPnd:\s*([0-9a-f]+)", status).group(1), 16)
    return bool(pending & (1 << (15 - 1)))


def test_cancel_stops_the_queue_and_keeps_what_finished(qtbot, window, tiny_model, tmp_path):
    wiz, page = _format_page(qtbot, window, tiny_model)
    assert page.select_types(["Q8_0", "Q4_0", "Q5_0"])
    folder = tmp_path / "queue"
    page.output.setText(str(folder))
    wiz.next_btn.click()
    job = wiz.run_page.job
    qtbot.waitUntil(lambda: (job.current_item or (0,))[0] == 2 or not job.is_running(), timeout=120000)
    assert job.is_running(), "the queue ended before its second type"
    proc = psutil.Process(job.pid())
    children = proc.children(recursive=True)
    for c in children:
        c.suspend()  # held where it is: the queue cannot finish before the Cancel lands
    try:
        with qtbot.waitSignal(wiz.run_page.cancelled, timeout=60000):
            wiz.run_page.cancel_btn.click()
            # the engine passes the Cancel on to llama.cpp's worker: then let it go, to stop as the engine asked
            try:
                qtbot.waitUntil(lambda: all(_sigterm_pending(c.pid) for c in children), timeout=5000)
            finally:
                for c in children:
                    if c.is_running():
                        c.resume()
    finally:
        if job.is_running():  # nothing may outlive the test, whatever failed
            job.proc.kill()
            job.proc.waitForFinished(10000)
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-llama-Q8_0.gguf"]  # no temporaries either
    assert "1 output finished before the cancel and stays" in wiz.run_page.status.text()
    log = wiz.run_page.log.toPlainText()
    if "killing it" not in log:  # the engine stopped itself (not killed after a slow stop): it says what stays
        assert f"finished before it stay: {folder / 'tiny-llama-Q8_0.gguf'}" in log


def test_importance_matrix_is_bounded_and_its_time_said_before_it_starts(qtbot, window, tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from app.settings import QUANTIZE_IMATRIX_RATE
    from engine.core.resources import resource_path
    from engine.estimate import estimate, load_plan

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    tokens = len(tok(resource_path("calibration.txt").read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
    wiz, page = _format_page(qtbot, window, tiny_model)
    page.select_type("Q4_K_M")
    page.imatrix_mode.setCurrentIndex(page.imatrix_mode.findData("calibration"))
    o = page.options
    qtbot.waitUntil(lambda: o.text is not None and o.flops is not None, timeout=60000)
    windows = min(64, tokens // 512)
    assert f"The text has {tokens // 512:,} windows of 512 tokens; {windows:,} will run." in o.cal_note.text()
    assert "Expected time: about" in o.cal_note.text() and "matrix-multiply probe" in o.cal_note.text()
    from app.jobs import format_seconds

    n = estimate(load_plan(tiny_model), "F16").n_params
    # the rate measured in the device probe's child, turned into time by hand: 2 operations a parameter a token
    assert f"Expected time: about {format_seconds(windows * 512 * 2 * n / o.flops)}" in o.cal_note.text()
    argv = page.command()
    assert argv[argv.index("--imatrix-chunks") + 1] == "64"  # bounded by default, as llama-imatrix's --chunks
    o.windows.setValue(4)
    page.output.setText(str(tmp_path / "im.gguf"))
    with qtbot.waitSignal(wiz.run_page.finished, timeout=180000):
        wiz.next_btn.click()
    rate = window.state.get(QUANTIZE_IMATRIX_RATE)
    assert rate > 0  # the run's own pace, kept for the next estimate
    wiz.back()
    assert "the rate of the last importance matrix run here" in o.cal_note.text()
    seconds = 4 * 512 * 2 * n / rate
    assert f"Expected time: about {format_seconds(seconds)}" in o.cal_note.text()
