"""Analysis: tensors in a tree, histograms of weights and error holding the data, per-layer errors, export.

The figures on screen are compared with the engine's own result for the same pair of models, computed here
apart from the view."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from engine.analysis.stats import compute_stats, iter_stats

BINS = 100  # what the view asks the engine for (app.services)


def _engine_stats(original, quantized, name: str):
    return next(iter_stats(original, quantized, bins=BINS, names=[name]))


def _assert_numbers_show(view, st) -> None:
    """The 'Selected tensor' box shows ``st``'s figures, to the digits it prints."""
    rmse_text, relative_text = view.numbers["rmse"].text().split("  (relative ")
    assert float(rmse_text) == pytest.approx(st.rmse, rel=1e-5)
    assert float(relative_text.rstrip(")")) == pytest.approx(st.relative_error, abs=5e-5)
    assert float(view.numbers["max_error"].text()) == pytest.approx(st.max_abs_error, rel=1e-5)
    assert float(view.numbers["cosine"].text()) == pytest.approx(st.cosine, abs=5e-7)
    assert float(view.numbers["bpw"].text()) == pytest.approx(st.bits_per_weight, abs=5e-4)
    assert view.numbers["name"].text() == st.name
    # the bars are the engine's counts, at the centres of its bins
    for item, hist in ((view.weights_hist, st.weight_hist), (view.error_hist, st.error_hist)):
        assert list(item.opts["height"]) == [float(c) for c in hist.counts]
        edges = np.asarray(hist.edges)
        assert np.allclose(item.opts["x"], (edges[:-1] + edges[1:]) / 2, rtol=0, atol=1e-12)


def test_histograms_and_layers_hold_data(qtbot, window, tiny_model, tiny_q2, tmp_path):
    window.show_view("Analysis")
    view = window.views["Analysis"]
    with qtbot.waitSignal(view.layers_shown, timeout=120000):
        view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    tops = [view.tree.topLevelItem(i).text(0) for i in range(view.tree.topLevelItemCount())]
    assert tops[:2] == ["Layer 0", "Layer 1"]
    qtbot.waitUntil(lambda: view.current_stats is not None, timeout=30000)
    first = view.current_stats.name
    assert first == view.tree.topLevelItem(0).child(0).text(0)
    _assert_numbers_show(view, _engine_stats(tiny_model, tiny_q2, first))
    # log scale
    view.log_y.setChecked(True)
    counts = np.asarray(_engine_stats(tiny_model, tiny_q2, first).weight_hist.counts)
    assert np.allclose(view.weights_hist.opts["height"], np.log10(counts + 1))
    view.log_y.setChecked(False)
    # pick another tensor
    layer1 = view.tree.topLevelItem(1)
    target = layer1.child(0)
    with qtbot.waitSignal(view.stats_shown, timeout=30000) as blocker:
        view.tree.setCurrentItem(target)
    assert blocker.args[0].name == target.text(0)
    _assert_numbers_show(view, _engine_stats(tiny_model, tiny_q2, target.text(0)))
    # per-layer bar chart: one bar a layer, each the layer's relative error as the engine sums it
    report = compute_stats(tiny_model, tiny_q2, bins=8)
    layers = [r for r in report.layers if r.layer is not None]
    assert list(view.layer_bars.opts["x"]) == [r.layer for r in layers] == [0, 1]
    assert list(view.layer_bars.opts["height"]) == pytest.approx([r.relative_error for r in layers], rel=1e-12)
    # export
    pngs = view.export_figures(str(tmp_path))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    path = view.export_numbers(str(tmp_path / "numbers.csv"))
    rows = list(csv.DictReader(path.open()))
    by_name = {t.name: t for t in report.tensors}
    tensor_rows = [r for r in rows if r["scope"] == "tensor"]
    assert sorted(r["name"] for r in tensor_rows) == sorted(by_name)
    for r in tensor_rows:
        t = by_name[r["name"]]
        assert (int(r["n_elements"]), r["qtype"]) == (t.n_elements, t.qtype)
        assert float(r["rmse"]) == pytest.approx(t.rmse, rel=1e-9)
        assert float(r["bits_per_weight"]) == pytest.approx(t.bits_per_weight, rel=1e-9)
    layer_rows = [r for r in rows if r["scope"] == "layer"]
    assert [int(r["name"]) for r in layer_rows] == [0, 1]
    assert [float(r["relative_error"]) for r in layer_rows] == pytest.approx([r.relative_error for r in layers])
