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
    # the quant-type column holds each tensor's type as the file's header gives it
    from gguf import GGUFReader

    header = {t.name: t.tensor_type.name for t in GGUFReader(str(tiny_q2)).tensors}
    items = [view.tree.topLevelItem(i).child(j) for i in range(view.tree.topLevelItemCount())
             for j in range(view.tree.topLevelItem(i).childCount())]
    assert items and all(it.text(2) == header[it.text(0)] for it in items)
    assert {it.text(2) for it in items} >= {"Q2_K"}
    # export: the histograms carry the tensor's name, the layer chart the model's; nothing is overwritten
    pngs = view.export_figures(str(tmp_path))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    tensor = view.current_stats.name
    assert [p.name for p in pngs] == [f"nibble-{tensor}-weights.png", f"nibble-{tensor}-error.png",
                                      f"nibble-{tiny_q2.name}-layers.png"]
    first = {p: p.read_bytes() for p in pngs}
    again = view.export_figures(str(tmp_path))
    assert not set(again) & set(pngs) and all(p.exists() for p in again)
    assert all(p.read_bytes() == b for p, b in first.items())  # the first export is untouched
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


# -- AWQ: weights compared after undoing the scales AWQ folds in ----------------------------------------------


@pytest.fixture(scope="module")
def awq_with_scales(tmp_path_factory):
    """A tiny Llama (no shared key/value heads, so o's scales fold into v), its AWQ checkpoint, and the scales
    AWQ searched, caught as the quantizer returned them: per layer, q/k/v's, o's, gate/up's and down's."""
    import random

    import engine.awq.search as search
    from engine.awq.quantize import quantize_awq
    from tinymodels import make_model

    root = tmp_path_factory.mktemp("awq")
    src = make_model(root / "model", "llama3", hidden=128, intermediate=256, heads=4, kv_heads=4, dtype="float32")
    r = random.Random(0)
    calib = root / "calib.txt"
    calib.write_text(" ".join(r.choice(["the", "cat", "sat", "on", "a", "mat", "and", "ran", "home"]) for _ in range(3000)))
    found = []
    with pytest.MonkeyPatch.context() as mp:
        for fn in ("search_scale_block", "search_scale_linear"):
            def keep(*a, _search=getattr(search, fn), **k):
                s = _search(*a, **k)
                found.append(s.detach().double().cpu().numpy().copy())
                return s

            mp.setattr(search, fn, keep)
        out = root / "model-awq"
        quantize_awq(src, out, group_size=32, calibration=calib, samples=8, seqlen=64)
    assert len(found) == 4 * 2
    return src, out, found


def test_awq_error_is_measured_without_the_folded_scales(qtbot, window, awq_with_scales):
    from safetensors.torch import load_file

    from engine.awq.pack import dequantize_gemm

    src, out, found = awq_with_scales
    view = window.views["Analysis"]
    window.show_view("Analysis")
    with qtbot.waitSignal(view.layers_shown, timeout=120000):
        view.open_payload({"original": str(src), "quantized": str(out)})
    assert "undoing" in view.basis.text()
    shown = {}
    for i in range(view.tree.topLevelItemCount()):
        group = view.tree.topLevelItem(i)
        for j in range(group.childCount()):
            shown[group.child(j).text(0)] = group.child(j)
    q = {}
    for f in out.glob("*.safetensors"):
        q.update(load_file(f))
    orig = load_file(src / "model.safetensors")
    for layer in range(2):
        s_qkv, s_o, s_mlp, s_down = found[4 * layer: 4 * layer + 4]
        cols = {"self_attn.q_proj": s_qkv, "self_attn.k_proj": s_qkv, "self_attn.v_proj": s_qkv,
                "self_attn.o_proj": s_o, "mlp.gate_proj": s_mlp, "mlp.up_proj": s_mlp, "mlp.down_proj": s_down}
        rows = {"self_attn.v_proj": s_o, "mlp.up_proj": s_down}  # the producers o's and down's scales divided
        for lin, c in cols.items():
            name = f"model.layers.{layer}.{lin}"
            w = orig[f"{name}.weight"].double().numpy()
            deq = dequantize_gemm(q[f"{name}.qweight"], q[f"{name}.qzeros"], q[f"{name}.scales"], 32).double().numpy()
            unscaled = deq / c[None, :] * (rows[lin][:, None] if lin in rows else 1.0)
            direct = np.linalg.norm(unscaled - w) / np.linalg.norm(w)
            naive = np.linalg.norm(deq - w) / np.linalg.norm(w)
            item = shown[name]
            assert item.text(2) == "AWQ int4 g32"
            reported = float(item.text(3))
            if lin in ("self_attn.o_proj", "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj"):
                assert reported == pytest.approx(direct, rel=0.05)  # scales fitted on the paired linear
            else:
                assert reported == pytest.approx(direct, abs=6e-5)  # scales read from the norms: exact
            if lin == "mlp.down_proj":  # what the view showed before: the folded scales counted as error
                assert naive > 2 * direct and reported < 1.1 * direct
