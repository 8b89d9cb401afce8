"""Compare's task set, context sweep with the memory at each KV cache type, and speed like with like: what
is on screen against figures found apart from the view (greedy decoding by hand, a plain evaluation at each
context, the engine's memory estimate, the GGUF's own header)."""

from __future__ import annotations

import csv
import json

import pytest

from engine.core.units import format_kld, human_bytes
from test_task_compare import greedy, last_word as _last_word

PROMPTS = ["Hello there", "Name a colour.", "Count to three.", "Why is the sky blue?"]
MAX_TOKENS = 32  # what the task set asks of each model


def _visible(text: str) -> str:
    return " ".join(text.split())


def test_task_set_accuracy_and_differing_answers(qtbot, window, tiny_model, tiny_q2, tmp_path):
    from engine.runtime import open_runtime

    with open_runtime(tiny_model, n_ctx=256) as a, open_runtime(tiny_q2, n_ctx=256) as b:
        replies = {}
        for p in PROMPTS:
            ids = a.chat_prompt_ids([{"role": "user", "content": p}])
            ta, tb = greedy(a, ids, MAX_TOKENS), greedy(b, ids, MAX_TOKENS)
            replies[p] = (ta, tb, a.detokenize(ta).strip(), b.detokenize(tb).strip())
    lines = []
    for n, p in enumerate(PROMPTS):  # the even ones ask for the original's own last word: right by construction
        answer = _last_word(replies[p][2]) if n % 2 == 0 and _last_word(replies[p][2]) else "xylophonequartz"
        lines.append({"prompt": p, "answer": answer, "category": "even" if n % 2 == 0 else "odd"})
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text("".join(json.dumps(d) + "\n" for d in lines), encoding="utf-8")

    window.show_view("Compare")
    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    panel = view.tasks
    assert panel.use_demo.isChecked()  # the demo's questions by default
    # Cancel stops the job and says so
    panel.file.setText(str(task_file))
    panel.use_file.setChecked(True)
    panel.run_btn.click()
    assert panel.run_btn.text() == "Cancel"
    panel.run_btn.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    assert panel.result is None and panel.run_btn.text() == "Run task set"

    with qtbot.waitSignal(panel.finished, timeout=300000):
        panel.run_btn.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=30000)

    def count(side: int, category: str | None = None) -> tuple[int, int]:
        chosen = [(p, d) for p, d in zip(PROMPTS, lines) if category is None or d["category"] == category]
        return sum(_last_word(replies[p][2 + side]) == d["answer"] for p, d in chosen), len(chosen)

    want_a = count(0)
    assert want_a[0] >= 1
    rows = {panel.table.verticalHeaderItem(r).text(): r for r in range(panel.table.rowCount())}
    assert set(rows) == {"Overall", "even", "odd"}
    for name, cat in (("Overall", None), ("even", "even"), ("odd", "odd")):
        for col in (0, 1):
            right, total = count(col, cat)
            assert panel.table.item(rows[name], col).text() == f"{100 * right / total:.1f} % ({right}/{total})"
    assert panel.table.item(rows["odd"], 0).text() == "0.0 % (0/2)"  # nobody says xylophonequartz

    differing = [p for p in PROMPTS if replies[p][0] != replies[p][1]]
    assert differing, "the tiny Q2_K answers some question otherwise"
    assert panel.differing.count() == len(differing)
    for n, p in enumerate(differing):
        assert p in panel.differing.item(n).text()
    # one opens side by side: both answers, the heat strip along the original's
    p = differing[0]
    panel.differing.itemClicked.emit(panel.differing.item(0))
    assert _visible(view.left.text.toPlainText()) == _visible(replies[p][2])
    assert _visible(view.right.text.toPlainText()) == _visible(replies[p][3])
    assert view.prompt.toPlainText() == p
    assert len(view.left.heat.kld) == len(replies[p][0])


def test_context_sweep_plots_and_memory_per_kv_type(qtbot, window, tiny_model, tiny_q2, tmp_path):
    from engine.analysis.evaluate import evaluate
    from engine.estimate import estimate, load_plan
    from engine.runtime import open_runtime

    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    panel = view.context
    assert not panel.isVisible() and panel.plan_job is None  # a panel off screen reads no header
    window.show_view("Compare")
    view.show_panel(view.context)
    qtbot.waitUntil(lambda: panel.plan is not None, timeout=60000)
    plan = load_plan(str(tiny_q2))
    assert max(panel.length_boxes) == plan.n_ctx_train == 2048  # offered up to the trained context
    for n, box in panel.length_boxes.items():
        box.setChecked(n in (64, 128))
    panel.windows.setValue(1)
    with qtbot.waitSignal(panel.finished, timeout=300000) as blocker:
        panel.run_btn.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=30000)
    results = blocker.args[0]
    assert [r.kv_type for r in results] == ["f16", "q8_0", "q4_0"]

    # one line per KV cache type, each point a plain evaluation at that context with that cache
    lines = {item.name(): item for item in panel.length_plot.getPlotItem().listDataItems()}
    assert set(lines) == {"KV cache f16", "KV cache q8_0", "KV cache q4_0"}
    for kv in ("f16", "q4_0"):
        x, y = lines[f"KV cache {kv}"].getOriginalDataset()
        assert list(x) == [64, 128]
        with open_runtime(tiny_model, n_ctx=128) as a, open_runtime(tiny_q2, n_ctx=128, kv_type=kv) as b:
            for ctx, got in zip(x, y):
                ref = evaluate(a, b, ctx=int(ctx), max_chunks=1)
                assert got == pytest.approx(ref.kld_mean, rel=1e-4, abs=1e-7)
    pos = {item.name(): item for item in panel.position_plot.getPlotItem().listDataItems()}
    assert set(pos) == set(lines) and len(pos["KV cache f16"].getOriginalDataset()[0]) > 1

    # memory to run (the engine's estimate for the file's type) beside the KLD measured at each cache type
    qtype = panel.qtype
    assert qtype == "Q2_K"
    for row, r in enumerate(results):
        est = estimate(plan, qtype, ctx=128, kv_type=r.kv_type).run
        cells = [panel.memory.item(row, c).text() for c in range(6)]
        assert cells[:5] == [human_bytes(est.total_bytes), human_bytes(est.weights_bytes),
                             human_bytes(est.kv_cache_bytes), human_bytes(est.compute_bytes),
                             human_bytes(est.overhead_bytes)]
        assert cells[5].startswith(format_kld(lines[f"KV cache {r.kv_type}"].getOriginalDataset()[1][-1]))
    assert panel.memory.item(2, 2).text() != panel.memory.item(0, 2).text()  # a q4_0 cache is smaller

    # exports carry both models' names, and never overwrite
    first = panel.export_figures(str(tmp_path))
    again = panel.export_figures(str(tmp_path))
    assert len(first) == 2 and all(p.exists() for p in first + again) and not set(first) & set(again)
    assert all(tiny_model.name in p.name and tiny_q2.name in p.name for p in first)
    csv_path = panel.export_numbers(str(tmp_path))
    assert tiny_q2.name in csv_path.name and panel.export_numbers(str(tmp_path)) != csv_path
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    for kv in ("f16", "q8_0", "q4_0"):
        y = lines[f"KV cache {kv}"].getOriginalDataset()[1]
        got = [float(r["kld_mean"]) for r in rows if r["what"] == "length" and r["kv_type"] == kv]
        assert got == pytest.approx(list(y))


def test_speed_side_by_side_through_the_same_runtime(qtbot, window, tiny_llama_dir, tiny_gguf_q4):
    from gguf import GGUFReader

    from engine.pipelines.speed import reference_gguf

    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_llama_dir), "quantized": str(tiny_gguf_q4)})
    panel = view.speed
    assert "transformers" in panel.note.text()  # answers and logits: still transformers, it says
    with qtbot.waitSignal(panel.finished, timeout=300000) as blocker:
        panel.run_btn.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=30000)
    r = blocker.args[0]
    ref = reference_gguf(tiny_llama_dir)  # made once, cached: the same file the measurement ran
    assert r.original.model == str(ref)
    names = {0: "F32", 1: "F16", 30: "BF16"}
    ftype = int(GGUFReader(str(ref)).fields["general.file_type"].parts[-1][0])
    assert panel.table.item(0, 0).text() == f"llama.cpp (GGUF {names[ftype]})"
    assert panel.table.item(0, 1).text() == "llama.cpp (GGUF Q4_0)"
    for col, side in enumerate((r.original, r.quantized)):
        assert panel.table.item(1, col).text().startswith(f"{side.bench.pp_tokens_per_s:,.1f} tokens/s")
        assert panel.table.item(4, col).text() == human_bytes(side.bench.peak_rss_bytes)
        assert side.bench.tg_tokens_per_s > 0
    assert "unquantized GGUF" in panel.note.text()
