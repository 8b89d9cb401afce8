"""Compare: original and quantized side by side, first divergence marked, KLD; the full eval.

What the view shows is compared with the engine's result: the highlighted text is the token at the first
divergence, found here from the two token lists, and the eval figures are the engine's for the same models."""

from __future__ import annotations

import pathlib

import pytest
from PySide6.QtGui import QTextCursor

from engine.analysis.evaluate import evaluate
from engine.core.units import format_kld, human_bytes


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
        # a token that ends in the middle of a character adds nothing: the piece completing it is marked
        at = next((i for i in range(div, len(side.pieces)) if side.pieces[i]), div)
        expected = side.pieces[at] if at < len(side.pieces) else ""
        assert expected.strip(), "the tiny model diverges on a visible token"
        assert _visible(_highlighted_text(panel.text)) == _visible(expected)
        assert f"{len(side.token_ids)} tokens" in panel.stats.text()
        assert (f"weights {human_bytes(side.weights_bytes)} + KV cache {human_bytes(side.kv_cache_bytes)} "
                f"({side.kv_cache_tokens:,} tokens)") in panel.stats.text()
    summary = view.summary.text()
    assert f"First divergence at token {div + 1} " in summary  # counted from 1 for people
    assert f"mean {format_kld(r.kld_mean)}, max {format_kld(r.kld_max)}" in summary and r.kld_mean > 0
    assert f"same top token {100 * r.top1_agreement:.1f} %" in summary
    qtbot.waitUntil(lambda: view.job is None, timeout=30000)
    _check_heat_strip(view, tiny_model, tiny_q2, "The weather today is", a)


def _check_heat_strip(view, original, quantized, prompt, answer_ids):
    """Each cell of the strip along the original's answer has the colour of the quantized model's KL divergence
    at that token, worked with numpy from both models' logits, and its tooltip gives the value."""
    import numpy as np

    from app.views.compare.heat import heat_colour
    from engine.runtime import open_runtime

    def log_softmax(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    with open_runtime(original, n_ctx=256) as a, open_runtime(quantized, n_ctx=256) as b:
        ids = a.chat_prompt_ids([{"role": "user", "content": prompt}])
        seq = ids + list(answer_ids)
        rows = slice(len(ids) - 1, len(seq) - 1)
        lp, lq = log_softmax(a.logits(seq)[rows]), log_softmax(b.logits(seq)[rows])
    kld = np.maximum((np.exp(lp) * (lp - lq)).sum(-1), 0)
    strip = view.left.heat
    assert strip.isVisible() and len(strip.kld) == len(answer_ids)
    image = strip.grab().toImage()
    ratio = image.devicePixelRatio()
    for i, want in enumerate(kld):
        centre = strip.cell_rect(i).center()
        got = image.pixelColor(int(centre.x() * ratio), int(centre.y() * ratio))
        ref = heat_colour(float(want))
        assert max(abs(got.red() - ref.red()), abs(got.green() - ref.green()), abs(got.blue() - ref.blue())) <= 3
        assert strip.kld[i] == pytest.approx(want, rel=1e-3, abs=1e-7)
        assert format_kld(strip.kld[i]) in strip.tooltip_text(i)
    assert len({heat_colour(float(v)).name() for v in kld}) > 1  # the strip is not one flat colour


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
    # four decimals, or scientific notation below 0.001 (never 0.0000 for a real divergence)
    assert mean.strip() == format_kld(expected.kld_mean) and p99.strip() == format_kld(expected.kld_p99)
    assert _number(mean) == pytest.approx(expected.kld_mean, rel=5e-3, abs=6e-5)
    assert view.eval_labels["agree"].text().endswith(" %")
    assert _number(view.eval_labels["agree"].text()) == pytest.approx(100 * expected.top1_agreement, abs=6e-3)


# -- streaming whole characters ---------------------------------------------------------------------------

TEXT = "Café 日本 tea 🎉 naïve"  # characters of 2, 3 and 4 bytes, which the tiny byte-level BPE splits


def _scripted(rt, ids: list[int]):
    """Make ``rt`` generate ``ids`` (then its end-of-text token), whatever its weights say."""
    import numpy as np

    script = iter(list(ids) + sorted(rt.eos_ids)[:1])

    def next_logits(*_args):
        z = np.full(rt.n_vocab, -1e9, np.float32)
        z[next(script)] = 0.0
        return z

    rt._prefill = next_logits
    rt._step = next_logits
    return rt


def _split_ids(rt) -> list[int]:
    ids = rt.tokenize(TEXT, add_bos=False)
    assert rt.detokenize(ids) == TEXT
    # the tokenizer really splits characters: some token alone is half a character
    assert any("\ufffd" in rt.detokenize([i]) for i in ids)
    return ids


@pytest.mark.parametrize("runtime", ["transformers", "llama.cpp", "llama.cpp child process"])
def test_streamed_pieces_are_whole_characters(tiny_model, tiny_chat_gguf, runtime):
    from app import services
    from engine.runtime.process import GGUFProcessRuntime

    if runtime == "transformers":
        rt = services.open_model(str(tiny_model))
    elif runtime == "llama.cpp":
        rt = services.open_model(str(tiny_chat_gguf), share_with_torch=False)
    else:
        rt = GGUFProcessRuntime(tiny_chat_gguf)
    try:
        ids = _split_ids(rt)
        # what Chat streams (services.chat_reply over a conversation)
        conv = services.Conversation(_scripted(rt, ids), services.ChatSettings(temperature=0.0, max_tokens=64))
        conv.ask("Say something")

        class Sink:
            def __init__(self):
                self.pieces: list[str] = []

            def emit(self, piece):
                self.pieces.append(piece)

            def is_cancelled(self):
                return False

        sink = Sink()
        services.chat_reply(conv, sink)
        assert "".join(sink.pieces) == TEXT == conv.history[-1]["content"]
        assert not any("\ufffd" in p for p in sink.pieces)
        # what Compare shows per token: one piece a token, whole characters only, joined = the text
        pieces = services.token_pieces(rt, ids)
        assert len(pieces) == len(ids) and "".join(pieces) == TEXT
        assert not any("\ufffd" in p for p in pieces) and "" in pieces
    finally:
        rt.close()


def test_compare_streams_whole_characters(qtbot, window, tiny_model, tiny_chat_gguf, monkeypatch):
    """Both sides stream TEXT (the quantized one with its last word changed): what streamed is what is shown
    at the end, on each side, with no broken characters."""
    from app.services import evaluation

    opened = evaluation.open_model
    other = TEXT.replace("naïve", "über")

    def open_scripted(path, **kw):
        rt = opened(path, **kw)
        return _scripted(rt, rt.tokenize(TEXT if path == str(tiny_model) else other, add_bos=False))

    monkeypatch.setattr(evaluation, "open_model", open_scripted)  # what Compare's side by side opens
    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_chat_gguf)})
    view.max_tokens.setValue(64)
    with qtbot.waitSignal(view.compared, timeout=120000) as blocker:
        view.run_btn.click()
    r = blocker.args[0]
    assert "".join(r.original.pieces) == TEXT and "".join(r.quantized.pieces) == other
    assert view._streamed == {"original": TEXT, "quantized": other}  # what arrived while streaming
    assert view.left.text.toPlainText() == TEXT and view.right.text.toPlainText() == other
    assert "\ufffd" not in view.left.text.toPlainText() + view.right.text.toPlainText()
    qtbot.waitUntil(lambda: view.job is None, timeout=30000)


# -- memory: what each loaded model holds ---------------------------------------------------------------


def test_memory_is_weights_and_kv_cache(tiny_model, tiny_chat_gguf):
    """Against figures found apart from the runtimes: the GGUF's tensor bytes from its header, the original's
    parameter count from its safetensors header (loaded as float32), and the KV cache worked by hand."""
    import json
    import math

    from gguf import GGUFReader
    from safetensors import safe_open

    from app import services

    cfg = json.loads((tiny_model / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    kv_per_token = cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 2  # keys and values
    gguf_tensor_bytes = sum(int(t.n_bytes) for t in GGUFReader(str(tiny_chat_gguf)).tensors)
    rt = services.open_model(str(tiny_chat_gguf), share_with_torch=False)
    try:
        assert rt.n_ctx == 2048
        assert rt.memory_bytes() == (gguf_tensor_bytes, 2048 * kv_per_token * 2, 2048)  # f16 keys and values
    finally:
        rt.close()
    with safe_open(str(tiny_model / "model.safetensors"), "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    rt = services.open_model(str(tiny_model))
    try:
        weights, kv, _ = rt.memory_bytes()
        assert weights >= 4 * n_params and weights - 4 * n_params < 4 * cfg["hidden_size"]  # + rotary buffers
        ids = rt.tokenize("Hello there", add_bos=False)
        list(rt.generate(ids, max_tokens=3))
        assert rt.last_generation.finish_reason == "length"  # every answer token went through the model
        n = len(ids) + len(rt.last_generation.token_ids)
        assert rt.memory_bytes()[1:] == (n * kv_per_token * 4, n)  # float32 keys and values
    finally:
        rt.close()


# -- every change of pair starts afresh; the pickers hold a pair the library links ---------------------------


def test_a_failed_or_changed_pair_leaves_nothing_of_the_last(qtbot, window, tiny_model, tiny_q2, tiny_chat_gguf,
                                                           monkeypatch):
    from app.services import NibbleError
    from app.state import ModelEntry

    view = window.views["Compare"]
    view.open_payload({"original": str(tiny_model), "quantized": str(tiny_q2)})
    view.max_tokens.setValue(4)
    with qtbot.waitSignal(view.compared, timeout=120000):
        view.run_btn.click()
    qtbot.waitUntil(lambda: view.job is None, timeout=30000)
    assert view.summary.text() and "tokens" in view.left.stats.text()
    view.eval_labels["ppl"].setText("1.000 → 2.000")  # as if an eval of this pair had been shown
    view.state.models_changed.emit()  # the model list refreshed, the pair unchanged: the answers stay
    assert view.result is not None and "tokens" in view.left.stats.text()

    # another quantized model: nothing of the last pair's answers or figures stays
    view.quantized.set_model(ModelEntry(str(tiny_chat_gguf), "gguf"))
    assert view.result is None and view.summary.text() == ""
    assert view.left.text.toPlainText() == view.right.text.toPlainText() == ""
    assert view.left.stats.text() == view.right.stats.text() == "—"
    assert all(label.text() == "—" for label in view.eval_labels.values())

    # a run that fails while generating: the error shows, "Generating…" does not stay
    import engine.analysis.compare

    def fails(*_a, **_k):
        raise NibbleError("the models stopped answering; try again")

    monkeypatch.setattr(engine.analysis.compare, "compare", fails)
    view.run_btn.click()
    qtbot.waitUntil(lambda: not view.banner.isHidden() and "stopped answering" in view.banner.label.text(), timeout=120000)
    qtbot.waitUntil(lambda: view.job is None, timeout=30000)
    assert view.summary.text() == "" and view.result is None
    assert view.left.stats.text() == view.right.stats.text() == "—"
    assert view.left.text.toPlainText() == view.right.text.toPlainText() == ""


def test_pickers_hold_a_pair_the_library_links(qtbot, state, tiny_model, tiny_q2, tmp_path):
    """After a restart (a new view over the saved library) the quantized model stands beside the original it
    was made from; picking another output brings its original along, and picking an original its output."""
    import shutil

    from app import services
    from app.views.compare import CompareView

    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    other_q = tmp_path / "other-Q4_K.gguf"
    shutil.copyfile(tiny_q2, other_q)
    services.record_in_library(str(tiny_q2), "gguf", origin=str(tiny_model), qtype="Q2_K")
    services.record_in_library(str(other_q), "gguf", origin=str(other), qtype="Q4_K")

    view = CompareView(state)
    qtbot.addWidget(view)
    o, q = view.original.current(), view.quantized.current()
    assert q is not None and q.origin and pathlib.Path(o.path).resolve() == pathlib.Path(q.origin).resolve()
    for out, original in ((other_q, other), (tiny_q2, tiny_model)):
        assert view.quantized.select_path(str(out))
        assert pathlib.Path(view.original.current().path).resolve() == original.resolve()
    assert view.original.select_path(str(other))
    assert pathlib.Path(view.quantized.current().path).resolve() == other_q.resolve()
    assert view.banner.isHidden()
    view.shutdown()
