"""Compare: original and quantized side by side, first divergence marked, KLD; the full eval.

What the view shows is compared with the engine's result: the highlighted text is the token at the first
divergence, found here from the two token lists, and the eval figures are the engine's for the same models."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QTextCursor

from engine.analysis.evaluate import evaluate


def _highlighted_text(browser) -> str:
    """The characters of a text view drawn with a background colour, in order."""
    doc = browser.document()
    cursor = QTextCursor(doc)
    out = []
    for pos in range(1, doc.characterCount()):
        cursor.setPosition(pos)  # the format of the character just before the cursor
        if cursor.charFormat().hasProperty(cursor.charFormat().Property.BackgroundBrush):
            out.append(doc.characterAt(pos - 1))
    return "".join(out).replace("\u2029", "\n")


def _visible(text: str) -> str:
    """Text as a rich-text view shows it: runs of white space drawn as one space."""
    return " ".join(text.split())


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
    assert o.token_ids and q.token_ids and len(o.pieces) == len(o.token_ids) and len(q.pieces) == len(q.token_ids)
    assert _visible(view.left.text.toPlainText()) == _visible("".join(o.pieces))
    assert _visible(view.right.text.toPlainText()) == _visible("".join(q.pieces))
    a, b = o.token_ids, q.token_ids
    div = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert a != b and r.first_divergence == div
    # the marked text is the token at the divergence, on each side (none where that side had already ended)
    for panel, side in ((view.left, o), (view.right, q)):
        expected = side.pieces[div] if div < len(side.pieces) else ""
        assert expected.strip(), "the tiny model diverges on a visible token"
        assert _visible(_highlighted_text(panel.text)) == _visible(expected)
        assert f"{len(side.token_ids)} tokens" in panel.stats.text() and "memory" in panel.stats.text()
    summary = view.summary.text()
    assert f"First divergence at token {div + 1} " in summary  # counted from 1 for people
    assert f"mean {r.kld_mean:.4f}, max {r.kld_max:.4f}" in summary and r.kld_mean > 0
    assert f"same top token {100 * r.top1_agreement:.1f} %" in summary


def _number(text: str) -> float:
    return float(text.strip().rstrip("%").strip())


def test_full_eval_shows_the_engines_figures(qtbot, window, tiny_model, tiny_q2):
    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    assert view.eval_chunks.text() == "all windows"  # the full evaluation by default
    view.eval_chunks.setValue(2)  # two windows keep the test short
    with qtbot.waitSignal(view.evaluated, timeout=180000):
        view.eval_btn.click()
        assert view.eval_btn.text() == "Cancel eval"
    qtbot.waitUntil(lambda: view.eval_btn.text() == "Run eval", timeout=30000)
    expected = evaluate(str(tiny_model), str(tiny_q2), max_chunks=2)
    assert expected.kld_mean > 0 and expected.chunks == 2
    ppl_ref, ppl_cand = view.eval_labels["ppl"].text().split("→")
    assert _number(ppl_ref) == pytest.approx(expected.ppl_reference, abs=5e-4 + 1e-6 * expected.ppl_reference)
    assert _number(ppl_cand) == pytest.approx(expected.ppl_candidate, abs=5e-4 + 1e-6 * expected.ppl_candidate)
    mean, p99 = view.eval_labels["kld"].text().split(",")
    assert _number(mean) == pytest.approx(expected.kld_mean, abs=6e-6)
    assert _number(p99) == pytest.approx(expected.kld_p99, abs=6e-6)
    assert view.eval_labels["agree"].text().endswith(" %")
    assert _number(view.eval_labels["agree"].text()) == pytest.approx(100 * expected.top1_agreement, abs=6e-3)
