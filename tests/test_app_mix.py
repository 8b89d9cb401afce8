"""The wizard's best mix for a size, on a tiny model: the size a uniform type or this machine sets, the
prediction before running, a file of exactly the predicted size, and the done page's measured comparison."""

from __future__ import annotations

import pathlib

import pytest

from eval_models import EVAL_TEXT


def _format_page(window, model: pathlib.Path):
    window.show_view("Quantize")
    wiz = window.views["Quantize"]
    wiz.model_page.folder_edit.setText(str(model))
    wiz.model_page.use_path(str(model))
    wiz.next_btn.click()
    return wiz, wiz.format_page


def test_mix_for_a_types_size_is_predicted_written_and_measured(qtbot, window, tiny_model, tmp_path):
    from engine.analysis.evaluate import evaluate
    from engine.estimate import estimate, load_plan

    wiz, page = _format_page(window, tiny_model)
    qtbot.waitUntil(lambda: page.plan is not None, timeout=60000)
    page.select_type("Q4_K_M")
    q4 = estimate(load_plan(tiny_model), "Q4_K_M").file_bytes
    mix = page.mix
    mix.setChecked(True)
    assert mix.as_type.text() == "Size of Q4_K_M"
    mix.as_type.click()
    assert mix.target_bytes() == q4
    page.imatrix_mode.setCurrentIndex(page.imatrix_mode.findData("calibration"))
    page.options.cal_path.setText(str(EVAL_TEXT))
    page.options.changed.emit()
    assert mix.calibration == str(EVAL_TEXT)
    mix.predict.click()
    qtbot.waitUntil(lambda: mix.preview is not None, timeout=300000)
    p = mix.preview
    assert p.file_bytes <= q4 and f"{p.file_bytes:,} bytes" in mix.result.text()
    from engine.core.units import format_kld

    assert f"predicted KL divergence <b>{format_kld(p.predicted_kld)}</b>" in mix.result.text()
    out = tmp_path / "tiny-mix.gguf"
    page.output.setText(str(out))
    argv = page.command()
    assert "--target-size" in argv and str(q4) in argv and "--type" not in argv
    with qtbot.waitSignal(wiz.run_page.finished, timeout=300000):
        wiz.next_btn.click()
    assert wiz.step() == 3
    # the file llama.cpp wrote is exactly the size the wizard predicted before running
    assert out.stat().st_size == p.file_bytes
    assert any(e.path == str(out) and e.qtype == "mix" for e in window.state.models())
    panel = wiz.done_page.mix_check
    assert panel.isVisible()
    panel.measure.click()
    qtbot.waitUntil(lambda: panel.check is not None, timeout=300000)
    c = panel.check
    mixed = evaluate(tiny_model, out)
    assert c.mix_kld == pytest.approx(mixed.kld_mean, rel=1e-6)
    assert c.uniform_type == "Q4_K_M" and c.uniform_bytes == q4
    shown = panel.result.text()
    assert f"{c.ratio:.2f}× the uniform Q4_K_M" in shown and f"{c.mix_top1:.2%}" in shown


def test_fit_this_machine_sets_the_largest_mix_that_runs(qtbot, window, tiny_model):
    from engine.core.devices import Machine
    from engine.estimate import estimate, load_plan
    from engine.estimate.mix import fitting_budget

    _wiz, page = _format_page(window, tiny_model)
    qtbot.waitUntil(lambda: page.plan is not None, timeout=60000)
    plan = load_plan(tiny_model)
    need = estimate(plan, "Q5_K_M", ctx=page.context()).run.ram_needed_bytes
    page.machine = Machine(int(need / 0.8) + 1, 0, 10**12, "/")
    page.update_estimates()
    page.mix.setChecked(True)
    page.mix.fit.click()
    want = fitting_budget(plan, page.machine, ctx=page.context())
    assert page.mix.target_bytes() == want >= estimate(plan, "Q5_K_M").file_bytes
    page.machine = Machine(1, 0, 10**12, "/")
    page.update_estimates()
    page.mix.fit.click()
    assert "No mix of this model runs on this machine" in page.mix.result.text()
