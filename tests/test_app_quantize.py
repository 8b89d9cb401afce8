"""The Quantize wizard end to end on a tiny model: type chosen, estimate shown, run, cancel, done page."""

from __future__ import annotations

import pathlib

import psutil
import pytest
from PySide6.QtGui import QGuiApplication




def _to_format_page(qtbot, window, model: pathlib.Path):
    window.show_view("Quantize")
    wiz = window.views["Quantize"]
    assert wiz.step() == 0 and not wiz.next_btn.isEnabled()
    wiz.model_page.folder_edit.setText(str(model))
    wiz.model_page.use_path(str(model))
    assert wiz.next_btn.isEnabled()
    wiz.next_btn.click()
    assert wiz.step() == 1
    return wiz


def _cells(page, name: str) -> list[str]:
    for r in range(page.table.rowCount()):
        if page.table.item(r, 0).text() == name:
            return [page.table.item(r, c).text() for c in range(page.table.columnCount())]
    raise AssertionError(f"{name} not in the type table")


def test_type_table_lists_llama_cpp_types(qtbot, window, tiny_model):
    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    names = [page.table.item(r, 0).text() for r in range(page.table.rowCount())]
    for t in ("Q8_0", "Q6_K", "Q4_K_M", "IQ4_XS", "Q2_K"):
        assert t in names
    assert page.select_type("IQ2_XXS")
    assert page.imatrix_mode.currentData() == "calibration"  # that type needs an importance matrix
    assert "importance matrix" in _cells(page, "IQ2_XXS")[5]
    assert page.select_type("Q4_K_M")
    assert page.selected_type() == "Q4_K_M"
    assert page.output.text().endswith("-Q4_K_M.gguf")


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _assert_bytes_shown(text: str, n: int) -> None:
    """A cell like '1.3 MiB' stands for ``n`` bytes, to the one decimal it shows."""
    value, unit = text.split()
    assert abs(float(value) * _UNITS[unit] - n) <= 0.05 * _UNITS[unit] + 1e-9, (text, n)


def _assert_row_is_the_estimate(page, plan, qtype: str) -> None:
    from engine.estimate import estimate

    est = estimate(plan, qtype, ctx=page.context(), kv_type=page.kv.currentText(), gpu_layers=0)
    cells = _cells(page, qtype)
    assert float(cells[1]) == pytest.approx(est.bits_per_weight, abs=0.005 + 1e-9), qtype
    _assert_bytes_shown(cells[2], est.file_bytes)
    _assert_bytes_shown(cells[3], est.run.ram_bytes + est.run.vram_bytes)


def test_estimate_cells_are_the_engines_estimate(qtbot, window, tiny_model):
    from engine.estimate import load_plan

    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.select_type("Q4_K_M")
    qtbot.waitUntil(lambda: page.plan is not None, timeout=30000)
    plan = load_plan(tiny_model)  # the engine's own reading of the same model, apart from the view's
    small = _cells(page, "Q4_K_M")
    for t in ("Q4_K_M", "Q8_0", "Q2_K", "IQ4_XS"):
        _assert_row_is_the_estimate(page, plan, t)
    assert "Q4_K_M" in page.estimate_label.text()
    # the figures, filled in one go, are read whole: each column is as wide as its widest figure
    table, metrics = page.table, page.table.fontMetrics()

    def narrow_columns():
        return [c for c in (1, 2, 3, 4) if table.horizontalHeader().sectionSize(c) < max(
            metrics.horizontalAdvance(table.item(r, c).text()) for r in range(table.rowCount()))]

    qtbot.waitUntil(lambda: narrow_columns() == [], timeout=10000)
    page.ctx.setCurrentIndex(page.ctx.count() - 1)  # the largest context: more KV cache
    big = _cells(page, "Q4_K_M")
    assert big[2] == small[2] and big[3] != small[3]
    for t in ("Q4_K_M", "Q8_0"):
        _assert_row_is_the_estimate(page, plan, t)
    page.kv.setCurrentIndex(page.kv.findText("q8_0"))
    _assert_row_is_the_estimate(page, plan, "Q4_K_M")
    qtbot.waitUntil(lambda: page.machine is not None, timeout=30000)
    assert _cells(page, "Q4_K_M")[4] in ("fits", "tight", "does not fit")
    assert "this machine" in page.estimate_label.text()


def test_wizard_runs_to_the_done_page(qtbot, window, tiny_model, tmp_path):
    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.select_type("Q4_K_M")
    out = tmp_path / "tiny-Q4_K_M.gguf"
    page.output.setText(str(out))
    progress = []
    with qtbot.waitSignal(wiz.run_page.finished, timeout=120000):
        wiz.next_btn.click()  # "Quantize"
        assert wiz.step() == 2
        wiz.run_page.job.progress.connect(lambda d, t, m, e: progress.append((d, t)))
    assert progress and progress[-1][0] == progress[-1][1]
    assert wiz.run_page.bar.value() == wiz.run_page.bar.maximum()
    _assert_command_is_the_jobs(wiz.run_page)
    assert wiz.step() == 3
    done = wiz.done_page
    assert out.is_file() and out.read_bytes()[:4] == b"GGUF"
    assert done.path_label.text() == str(out)
    assert done.size_label.text().endswith(("KiB", "MiB"))
    assert "llama-cli -m" in done.commands["llama.cpp"] and str(out) in done.commands["llama.cpp"]
    assert "ollama create" in done.commands["Ollama"]
    # the output joined the library and opens in Chat and Compare
    assert any(e.path == str(out) and e.kind == "gguf" for e in window.state.models())
    done.chat_btn.click()
    assert window.current_view_name() == "Chat"
    assert window.views["Chat"].picker.current().path == str(out)
    window.show_view("Quantize")
    done.compare_btn.click()
    assert window.current_view_name() == "Compare"
    assert window.views["Compare"].quantized.current().path == str(out)
    assert window.views["Compare"].original.current().path == str(tiny_model)
    # the command copies
    QGuiApplication.clipboard().setText("")
    done.cmd_box.findChildren(type(done.chat_btn))[0].click()
    assert QGuiApplication.clipboard().text() in done.commands.values()


def _assert_command_is_the_jobs(run) -> None:
    """The command the run page shows (and copies) is a `nibble` command that parses, with the CLI's own
    parser, to the very options of the engine command the job ran."""
    import shlex

    from engine.commands.cli import build_parser

    shown = run.command.text()
    words = shlex.split(shown)
    assert words[0] == "nibble" and "python" not in shown and "-m engine" not in shown
    argv = run.job.argv
    assert argv[1:3] == ["-m", "engine"]
    parser = build_parser()
    mine, theirs = vars(parser.parse_args(words[1:])), vars(parser.parse_args(argv[3:]))
    assert theirs.pop("json_progress") is True and mine.pop("json_progress") is False
    mine.pop("_run"), theirs.pop("_run")
    assert mine == theirs
    assert run.log.toPlainText().splitlines()[0] == f"$ {shown}"  # the log starts with it too
    log = run.log  # long lines scroll sideways in a fixed-width font, never wrap
    assert log.lineWrapMode() == log.LineWrapMode.NoWrap
    assert log.fontMetrics().horizontalAdvance("iiii") == log.fontMetrics().horizontalAdvance("MMMM")
    QGuiApplication.clipboard().setText("")
    run.copy_btn.click()
    assert QGuiApplication.clipboard().text() == shown


def test_cancel_really_stops_the_child(qtbot, window, tiny_model, tmp_path):
    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.select_type("Q4_K_M")
    page.imatrix_mode.setCurrentIndex(1)  # compute an importance matrix from the calibration text
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "cancelled-Q4_K_M.gguf"
    page.output.setText(str(out))
    wiz.next_btn.click()
    job = wiz.run_page.job
    seen = []
    job.progress.connect(lambda d, t, m, e: seen.append((job.stage, d, t)))
    # wait until llama.cpp's worker (a grandchild) is part way through the importance matrix
    qtbot.waitUntil(lambda: any(s == "imatrix" and d < t for s, d, t in seen), timeout=120000)
    proc = psutil.Process(job.pid())
    children = proc.children(recursive=True)
    assert children, "the worker had already ended"
    for c in children:
        c.suspend()  # held where it is: the job cannot finish before the Cancel lands
    with qtbot.waitSignal(wiz.run_page.cancelled, timeout=60000):
        wiz.run_page.cancel_btn.click()
        assert wiz.run_page.eta.text() == ""  # no figure left to freeze while it stops
        assert wiz.run_page.title.text().startswith("Cancelling")
    for p in [proc, *children]:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, p.cmdline()
    assert "Cancelled" in wiz.run_page.status.text()
    assert not wiz.run_page.title.text().startswith("Quantizing")
    assert not out.exists()
    assert sorted(x.name for x in folder.iterdir()) == []  # no temporaries left behind
    _ready_for_the_next_job(wiz, "cancelled")
    wiz.back()
    assert wiz.step() == 1 and wiz.next_btn.text() == "Quantize"


def test_an_output_that_cannot_be_written_is_refused_before_the_run(qtbot, window, tiny_model, tmp_path):
    from engine.core.errors import NibbleError
    from engine.core.outputs import check_output

    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.select_type("Q8_0")
    target = tmp_path / "no-such-folder" / "x.gguf"
    page.output.setText(str(target))
    wiz.next_btn.click()
    assert wiz.step() == 1 and wiz.run_page.job is None  # nothing started
    with pytest.raises(NibbleError) as engine_says:  # the same check, asked of the engine directly
        check_output(target)
    message = str(engine_says.value)
    assert "no-such-folder" in message and message.endswith("create it or choose another output path")
    assert page.banner.isVisible() and page.banner.label.text() == f"Save to: {message}"
    # an output that would replace a file of the model
    (tiny_model / "model.safetensors.gguf").write_bytes(b"not a model")
    try:
        page.output.setText(str(tiny_model / "model.safetensors.gguf"))
        wiz.next_btn.click()
    finally:
        (tiny_model / "model.safetensors.gguf").unlink()
    assert wiz.step() == 1
    assert page.banner.label.text().endswith("is an input of this job; choose another name so the original is kept")


def test_failure_in_the_run_shows_the_engines_words(qtbot, window, tiny_model, tmp_path):
    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.select_type("Q8_0")
    bad = tmp_path / "not-an-imatrix.dat"
    bad.write_bytes(b"\x00" * 64)
    page.imatrix_mode.setCurrentIndex(page.imatrix_mode.findData("imatrix"))
    page.imatrix_path.setText(str(bad))
    page.output.setText(str(tmp_path / "x.gguf"))
    with qtbot.waitSignal(wiz.run_page.failed, timeout=120000) as blocker:
        wiz.next_btn.click()
    message = blocker.args[0]
    assert str(bad) in message and "importance matrix" in message
    assert "Traceback" not in message and "\n" not in message  # the CLI's one line, in place
    assert wiz.run_page.banner.label.text().startswith("Quantization failed")
    assert not (tmp_path / "x.gguf").exists()
    _ready_for_the_next_job(wiz, "failed")


def _ready_for_the_next_job(wiz, outcome: str) -> None:
    """After a failed or cancelled job the run page says so, and Back and Quantize again both work."""
    run = wiz.run_page
    assert wiz.step() == 2 and not run.is_running()
    assert run.title.text().endswith(f": {outcome}.") and not run.cancel_btn.isEnabled()
    assert run.bar.value() == 0 and run.bar.format() == "" and run.eta.text() == ""
    assert wiz.back_btn.isEnabled() and wiz.next_btn.isVisible() and wiz.next_btn.isEnabled()
    assert wiz.next_btn.text() == "Quantize again"


def _text_of_tokens(tokenizer, n: int) -> str:
    """Calibration text of at least ``n`` tokens."""
    from engine.core.resources import resource_path

    words = resource_path("calibration.txt").read_text(encoding="utf-8").split()
    text, k = "", 200
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < n:
        text = " ".join(words[:k])
        k += 200
    return text


def test_wizard_makes_an_awq_model_with_samples_fitted_to_the_text(qtbot, window, tiny_model, tmp_path):
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    cal = tmp_path / "short.txt"
    cal.write_text(_text_of_tokens(tok, 1500), encoding="utf-8")
    tokens = len(tok(cal.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])  # the reference
    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.awq_radio.setChecked(True)
    assert page.selected_type() == "AWQ" and not page.table.isEnabled()
    assert not page.output.text().endswith(".gguf") and page.output.text().endswith("-AWQ")  # a folder
    o = page.options
    assert o.samples.isVisible() and o.seqlen.isVisible() and o.group_size.isVisible() and not o.windows.isVisible()
    o.cal_path.setText(str(cal))
    o.count_text()
    o.seqlen.setValue(128)
    o.group_size.setCurrentIndex(o.group_size.findData(64))
    qtbot.waitUntil(lambda: o.text is not None and o.text.path == str(cal), timeout=60000)
    want = tokens // 128
    assert 0 < want < 128
    assert o.cal_note.text() == f"Fitted to {want:,} samples: the text has {tokens:,} tokens ({want:,} × 128)."
    out = tmp_path / "tiny-AWQ"
    page.output.setText(str(out))
    with qtbot.waitSignal(wiz.run_page.finished, timeout=180000):
        wiz.next_btn.click()
    argv = wiz.run_page.job.argv
    assert argv[argv.index("--samples") + 1] == str(want) and argv[argv.index("--seqlen") + 1] == "128"
    assert wiz.step() == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "awq" and cfg["quantization_config"]["group_size"] == 64
    assert wiz.done_page.output.kind == "awq"
    assert "vllm serve" in wiz.done_page.commands["vLLM"]
    assert any(e.path == str(out) and e.kind == "awq" for e in window.state.models())
    # a second AWQ run into the same, now full, folder is refused on the page, before anything starts
    wiz.back()
    page.output.setText(str(out))
    wiz.next_btn.click()
    assert wiz.step() == 1
    assert page.banner.label.text().startswith("Save to: output path") and "not empty" in page.banner.label.text()


def test_a_setting_at_fault_is_named_by_its_field_not_a_flag(qtbot, window, tiny_model, tmp_path):
    import json

    wiz = _to_format_page(qtbot, window, tiny_model)
    page = wiz.format_page
    page.select_type("Q8_0")
    page.output.setText(str(tmp_path / "tiny.bin"))  # not a .gguf name
    wiz.next_btn.click()
    assert wiz.step() == 1
    assert page.banner.label.text().startswith("Save to: output path") and "must end in .gguf" in page.banner.label.text()
    assert "--" not in page.banner.label.text()
    # found by the engine in the run: a sample longer than the model's context
    trained = json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"]
    page.awq_radio.setChecked(True)
    page.output.setText(str(tmp_path / "awq-out"))
    page.options.seqlen.setValue(trained * 2)
    qtbot.waitUntil(lambda: page.options.text is not None, timeout=60000)
    with qtbot.waitSignal(wiz.run_page.failed, timeout=120000) as blocker:
        wiz.next_btn.click()
    assert f"sample length {trained * 2} is longer than the model's context" in blocker.args[0]
    assert wiz.run_page.job.error_setting == "sample length"
    banner = wiz.run_page.banner.label.text()
    assert banner.startswith("Quantization failed (Sample length): sample length") and "--" not in banner
    assert page.options.cal_form.labelForField(page.options.seqlen).text() == "Sample length:"  # a real field
