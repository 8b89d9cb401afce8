"""Analysis: tensors in a tree, histograms of weights and error holding the data, per-layer errors, export."""

from __future__ import annotations

import csv

import numpy as np


def test_histograms_and_layers_hold_data(qtbot, window, tiny_model, tiny_q2, tmp_path):
    window.show_view("Analysis")
    view = window.views["Analysis"]
    with qtbot.waitSignal(view.layers_shown, timeout=120000):
        view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    tops = [view.tree.topLevelItem(i).text(0) for i in range(view.tree.topLevelItemCount())]
    assert tops[:2] == ["Layer 0", "Layer 1"]
    qtbot.waitUntil(lambda: view.current_stats is not None, timeout=30000)
    st = view.current_stats
    # the histograms on screen are the tensor's: every weight counted once
    w_heights = view.weights_hist.opts["height"]
    e_heights = view.error_hist.opts["height"]
    assert len(w_heights) == len(st.weight_hist.counts) and int(np.sum(w_heights)) == st.n_elements
    assert int(np.sum(e_heights)) == st.n_elements
    assert float(view.numbers["rmse"].text().split()[0]) > 0
    assert 0.5 < float(view.numbers["cosine"].text()) <= 1.0
    assert 2.0 < float(view.numbers["bpw"].text()) < 8.0
    # log scale
    view.log_y.setChecked(True)
    assert np.allclose(view.weights_hist.opts["height"], np.log10(np.asarray(st.weight_hist.counts) + 1))
    view.log_y.setChecked(False)
    # pick another tensor
    layer1 = view.tree.topLevelItem(1)
    target = layer1.child(0)
    with qtbot.waitSignal(view.stats_shown, timeout=30000) as blocker:
        view.tree.setCurrentItem(target)
    assert blocker.args[0].name == target.text(0) and view.numbers["name"].text() == target.text(0)
    # per-layer bar chart: one bar a layer, all errors positive
    assert list(view.layer_bars.opts["x"]) == [0, 1]
    assert all(h > 0 for h in view.layer_bars.opts["height"])
    # export
    pngs = view.export_figures(str(tmp_path))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    path = view.export_numbers(str(tmp_path / "numbers.csv"))
    rows = list(csv.DictReader(path.open()))
    assert sum(r["scope"] == "tensor" for r in rows) == view.tree.topLevelItem(0).childCount() + layer1.childCount() + sum(
        view.tree.topLevelItem(i).childCount() for i in range(2, view.tree.topLevelItemCount()))
    assert sum(r["scope"] == "layer" for r in rows) == 2
