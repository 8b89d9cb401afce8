"""Compare: original and quantized side by side, first divergence marked, KLD; the full eval."""

from __future__ import annotations


def test_side_by_side_marks_the_divergence(qtbot, window, tiny_model, tiny_q2):
    window.show_view("Compare")
    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    assert view.original.current().path == str(tiny_model)
    assert view.quantized.current().path == str(tiny_q2)
    assert view.greedy.isChecked()  # greedy by default
    view.max_tokens.setValue(24)
    view.prompt.setPlainText("The weather today is")
    with qtbot.waitSignal(view.compared, timeout=120000) as blocker:
        view.run_btn.click()
    r = blocker.args[0]
    o, q = r.original, r.quantized
    assert o.token_ids and q.token_ids
    assert "".join(o.pieces).strip()[:5] in view.left.text.toPlainText()
    assert "".join(q.pieces).strip()[:5] in view.right.text.toPlainText()
    div = r.first_divergence
    assert div is not None and o.token_ids[:div] == q.token_ids[:div]
    assert o.token_ids[div:div + 1] != q.token_ids[div:div + 1]
    for panel in (view.left, view.right):
        assert 'title="first divergence"' in panel.text.toHtml() or "background-color" in panel.text.toHtml()
        assert "tokens/s" in panel.stats.text() and "memory" in panel.stats.text()
    assert r.kld_mean > 0
    assert f"token {div + 1}" in view.summary.text() and "KL divergence" in view.summary.text()


def test_full_eval_shows_ppl_kld_agreement(qtbot, window, tiny_model, tiny_q2):
    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    assert view.eval_chunks.text() == "all windows"  # the full evaluation by default
    view.eval_chunks.setValue(2)  # two windows keep the test short
    with qtbot.waitSignal(view.evaluated, timeout=180000) as blocker:
        view.eval_btn.click()
        assert view.eval_btn.text() == "Cancel eval"
    res = blocker.args[0]
    assert res.chunks == 2 and res.kld_mean > 0
    assert "→" in view.eval_labels["ppl"].text()
    assert view.eval_labels["kld"].text()[0].isdigit()
    assert view.eval_labels["agree"].text().endswith("%")
    qtbot.waitUntil(lambda: view.eval_btn.text() == "Run eval")
