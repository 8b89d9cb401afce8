"""Chat: a real GGUF streams into the transcript; Stop ends the stream; Regenerate and Clear."""

from __future__ import annotations

import threading

import pytest

from app.state import ModelEntry


def _chat(window, gguf):
    window.show_view("Chat")
    chat = window.views["Chat"]
    chat.picker.set_model(ModelEntry(str(gguf), "gguf"))
    assert chat.picker.current().path == str(gguf)
    chat.temperature.setValue(0.0)  # greedy: the same reply every time
    return chat


def test_chat_streams_a_reply(qtbot, window, tiny_chat_gguf):
    chat = _chat(window, tiny_chat_gguf)
    chat.max_tokens.setValue(24)
    pieces, busy = [], []
    chat.piece_shown.connect(pieces.append)
    chat.piece_shown.connect(lambda _p: busy.append(chat.send_btn.isEnabled() or not chat.stop_btn.isEnabled()))
    chat.input.setPlainText("Hello there")
    with qtbot.waitSignal(chat.reply_finished, timeout=60000) as blocker:
        chat.send_btn.click()
    reply = blocker.args[0]
    assert len(pieces) > 1 and "".join(pieces) == reply  # it arrived piece by piece
    assert not any(busy)  # while streaming: Send disabled, Stop enabled
    assert [m["role"] for m in chat.conversation.history] == ["user", "assistant"]
    assert chat.conversation.history[1]["content"] == reply
    assert "Hello there" in chat.transcript.toPlainText()
    assert reply.strip()[:10] in chat.transcript.toPlainText()
    assert "tokens/s" in chat.stats.text()
    assert chat.fill.value() > 0
    assert "im_start" in chat.template.toPlainText()  # the model's own chat template
    qtbot.waitUntil(lambda: chat.send_btn.isEnabled())

    # Regenerate replaces the reply (greedy: the same text again); Clear empties the conversation
    with qtbot.waitSignal(chat.reply_finished, timeout=60000) as again:
        chat.regen_btn.click()
    assert again.args[0] == reply
    assert [m["role"] for m in chat.conversation.history] == ["user", "assistant"]
    qtbot.waitUntil(lambda: chat.send_btn.isEnabled())
    chat.clear_btn.click()
    assert chat.conversation.history == [] and chat.transcript.toPlainText().strip() == ""


def test_stop_ends_the_stream(qtbot, window, tiny_chat_gguf, monkeypatch):
    chat = _chat(window, tiny_chat_gguf)
    chat.max_tokens.setValue(4000)  # far more than it would produce before the stop
    loaded = []
    chat.ensure_model(lambda: loaded.append(True))
    qtbot.waitUntil(lambda: bool(loaded), timeout=240000)
    # after its first piece of text the model waits for the Stop, so the stream cannot end on its own first
    stopped = threading.Event()
    generate_tokens = chat.runtime.generate_tokens

    def wait_for_stop_after_first_piece(*args, **kwargs):
        for n, item in enumerate(generate_tokens(*args, **kwargs)):
            yield item
            if n == 0:
                assert stopped.wait(120), "Stop was never pressed"

    monkeypatch.setattr(chat.runtime, "generate_tokens", wait_for_stop_after_first_piece)
    chat.input.setPlainText("Tell me a long story")
    chat.send()
    qtbot.waitUntil(lambda: chat.job is not None and len(chat.reply) > 0, timeout=240000)
    with qtbot.waitSignal(chat.reply_finished, timeout=240000):
        chat.stop_btn.click()
        stopped.set()
    qtbot.waitUntil(lambda: chat.job is None, timeout=240000)
    gen = chat.runtime.last_generation
    assert gen.finish_reason == "cancelled"
    assert 0 < len(gen.token_ids) < 4000 and chat.reply == chat.runtime.detokenize(gen.token_ids)
    assert "stopped" in chat.stats.text()
    assert chat.send_btn.isEnabled() and not chat.stop_btn.isEnabled()


def test_chat_figures_on_a_known_clock(monkeypatch):
    """tokens/s counts the tokens after the first over the time since the first arrived (the wait for the
    first is the prompt's, not generation's); the clock is moved by hand, one token every 0.25 s."""
    import time
    from types import SimpleNamespace

    from app.services import chat_reply
    from engine.runtime.chat import ChatSettings, Conversation

    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    class Model:
        n_ctx = 64
        last_generation = SimpleNamespace(token_ids=[], prompt_tokens=3, finish_reason="length", text="")

        def chat_prompt_ids(self, messages):
            return [1, 2, 3]

        def generate(self, ids, **settings):
            for tok in (10, 11, 12, 13, 14):
                now[0] += 0.25
                self.last_generation.token_ids.append(tok)
                yield f"t{tok}"

    pieces = []
    reporter = SimpleNamespace(emit=pieces.append, is_cancelled=lambda: False)
    conversation = Conversation(Model(), ChatSettings(max_tokens=5))
    conversation.ask("hi")
    figures = chat_reply(conversation, reporter)
    assert pieces == ["t10", "t11", "t12", "t13", "t14"]
    assert conversation.history[-1] == {"role": "assistant", "content": "t10t11t12t13t14"}
    # first token at 0.25 s, last at 1.25 s: 4 more tokens in 1 s
    assert figures.tokens_per_second == pytest.approx(4.0)
    assert (figures.completion_tokens, figures.prompt_tokens) == (5, 3)
    assert (figures.context_used, figures.context_size, figures.finish_reason) == (8, 64, "length")
    assert figures.seconds == pytest.approx(1.25)


# -- typing, figures while streaming, copy, clear ------------------------------------------------------------


def _pace_by_the_fill(chat, monkeypatch):
    """After each token the model waits until the context bar has moved, so every token's redraw is seen."""
    moved = threading.Event()
    chat.fill.valueChanged.connect(lambda _v: moved.set())
    generate_tokens = chat.runtime.generate_tokens

    def paced(*args, **kwargs):
        for item in generate_tokens(*args, **kwargs):
            moved.clear()
            yield item
            moved.wait(30)

    monkeypatch.setattr(chat.runtime, "generate_tokens", paced)


def test_enter_sends_and_figures_move_while_streaming(qtbot, window, tiny_chat_gguf, monkeypatch):
    import time

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication

    chat = _chat(window, tiny_chat_gguf)
    chat.max_tokens.setValue(12)
    chat.context.setValue(256)
    with qtbot.waitSignal(chat.model_loaded, timeout=120000):
        chat.load_btn.click()
    _pace_by_the_fill(chat, monkeypatch)
    window.activateWindow()
    chat.input.setFocus()
    qtbot.keyClicks(chat.input, "Hello")
    qtbot.keyClick(chat.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(chat.input, "there")
    assert chat.input.toPlainText() == "Hello\nthere" and chat.conversation.history == []  # Shift+Enter: a line

    fills, first_piece = [], []
    chat.piece_shown.connect(lambda _p: first_piece or first_piece.append(time.monotonic()))
    chat.fill.valueChanged.connect(lambda v: chat.is_busy() and fills.append(v))
    pressed = time.monotonic()
    with qtbot.waitSignal(chat.reply_finished, timeout=120000) as done:
        qtbot.keyClick(chat.input, Qt.Key.Key_Return)  # Enter: sends
    qtbot.waitUntil(lambda: not chat.is_busy(), timeout=60000)
    assert chat.conversation.history[0] == {"role": "user", "content": "Hello\nthere"}
    assert chat.input.toPlainText() == ""

    # the context bar moved token by token while the reply streamed, in tokens of the 256 loaded
    gen = chat.runtime.last_generation
    assert chat.runtime.n_ctx == 256 and chat.fill.maximum() == 256
    assert len(fills) >= 3 and fills == sorted(set(fills)), fills
    assert fills[0] > gen.prompt_tokens - 1 and chat.fill.value() == gen.prompt_tokens + len(gen.token_ids)
    assert f"{chat.fill.value()} of 256 tokens" in chat.fill.toolTip()
    # time to first token: what is shown lies between pressing Enter and the first piece arriving
    import re

    shown = float(re.search(r"first token ([0-9.]+) s", chat.stats.text()).group(1))
    assert 0 <= shown <= first_piece[0] - pressed + 0.01
    assert re.search(r"[0-9.]+ tokens/s", chat.stats.text())

    # Copy on the model's message puts the reply on the clipboard, as the model wrote it
    from PySide6.QtGui import QTextCursor

    QGuiApplication.clipboard().clear()
    cursor = QTextCursor(chat.transcript.document())
    cursor.setPosition(chat.transcript.copy_link_position(1) + 1)
    with qtbot.waitSignal(chat.transcript.copied, timeout=10000):
        qtbot.mouseClick(chat.transcript.viewport(), Qt.MouseButton.LeftButton,
                         pos=chat.transcript.cursorRect(cursor).center())
    assert QGuiApplication.clipboard().text() == done.args[0] == chat.conversation.history[1]["content"]

    # Clear: nothing left to regenerate or save
    assert chat.regen_btn.isEnabled() and chat.save_btn.isEnabled()
    chat.clear_btn.click()
    assert not chat.regen_btn.isEnabled() and not chat.save_btn.isEnabled()
    assert chat.fill.value() == 0 and chat.stats.text() == ""


def test_replies_render_markdown(qtbot, window):
    """A reply with a fenced code block, a list, bold and inline code shows as such; Copy gives the Markdown."""
    from PySide6.QtGui import QFont, QFontInfo, QGuiApplication, QTextDocument

    from app.services import save_conversation
    from app.style import colors

    reply = ("Use **plus**:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
             "- first item with `x = 1`\n- second item\n\n<b>not html</b>")
    path = save_conversation([{"role": "user", "content": "How do I add?"},
                              {"role": "assistant", "content": reply}], model="")
    chat = window.views["Chat"]
    window.show_view("Chat")
    with qtbot.waitSignal(chat.saved_changed, timeout=10000):
        chat.refresh_saved()
    chat.saved.list.setCurrentRow(0)
    chat.saved.open_btn.click()
    assert chat.saved_path == path
    doc = chat.transcript.document()
    text = doc.toPlainText()
    reference = QTextDocument()
    reference.setMarkdown(reply, QTextDocument.MarkdownFeature.MarkdownNoHTML)  # Qt's own rendering of it
    assert reference.toPlainText().strip() in text
    assert "```" not in text and "**" not in text and "def add(a, b):" in text
    assert "<b>not html</b>" in text  # HTML in a reply is shown, not obeyed

    def fmt_at(needle):
        cursor = doc.find(needle)
        assert not cursor.isNull(), needle
        return cursor

    code = fmt_at("return a + b")
    assert QFontInfo(code.charFormat().font()).fixedPitch()
    assert code.block().blockFormat().background().color().name() == colors().code_background
    assert not QFontInfo(fmt_at("Use").charFormat().font()).fixedPitch()
    assert QFontInfo(fmt_at("x = 1").charFormat().font()).fixedPitch()
    assert fmt_at("plus").charFormat().fontWeight() >= QFont.Weight.Bold
    assert fmt_at("first item").block().textList() is not None
    assert fmt_at("second item").block().textList() is fmt_at("first item").block().textList()
    chat.transcript.copy_message(1)
    assert QGuiApplication.clipboard().text() == reply


# -- load and unload, saved conversations ----------------------------------------------------------------------


def test_load_unload_and_loading_settings(qtbot, window, state, tiny_chat_gguf):
    from app.settings import CHAT_CONTEXT, CHAT_GPU_LAYERS
    from app.views.chat import ChatView

    chat = _chat(window, tiny_chat_gguf)
    chat.gpu_layers.setValue(0)
    chat.context.setValue(256)
    assert not chat.unload_btn.isEnabled() and "No model loaded" in chat.loaded_label.text()
    with qtbot.waitSignal(chat.model_loaded, timeout=120000):
        chat.load_btn.click()
    rt = chat.runtime
    assert rt.llm.n_ctx() == 256  # llama.cpp's own figure
    label = chat.loaded_label.text()
    assert "tiny-Q8_0.gguf" in label and "context 256 tokens" in label and "GPU layers none" in label
    assert (state.get(CHAT_CONTEXT), state.get(CHAT_GPU_LAYERS)) == (256, 0)  # remembered...
    other = ChatView(state)
    qtbot.addWidget(other)
    assert (other.context.value(), other.gpu_layers.value()) == (256, 0)  # ...and shown next time

    chat.context.setValue(512)  # applies on the next Load, not now
    assert rt.llm.n_ctx() == 256 and "next Load" in chat.loaded_label.text()
    with qtbot.waitSignal(chat.model_loaded, timeout=120000):
        chat.load_btn.click()
    qtbot.waitUntil(lambda: chat.runtime is not None and chat.runtime is not rt, timeout=120000)
    assert rt.llm is None  # the first one was freed
    assert chat.runtime.llm.n_ctx() == 512 and "context 512 tokens" in chat.loaded_label.text()
    assert "next Load" not in chat.loaded_label.text()

    second = chat.runtime
    qtbot.waitUntil(lambda: chat.unload_btn.isEnabled())
    chat.unload_btn.click()
    assert chat.runtime is None and second.llm is None
    assert "No model loaded" in chat.loaded_label.text() and not chat.unload_btn.isEnabled()


def test_saved_conversation_reopens_and_continues(qtbot, window, tiny_chat_gguf, monkeypatch, settings):
    import json
    import os
    import pathlib

    from PySide6.QtCore import Qt

    from engine.runtime.base import Runtime

    chat = _chat(window, tiny_chat_gguf)
    chat.max_tokens.setValue(8)
    chat.input.setPlainText("Hello there")
    with qtbot.waitSignal(chat.reply_finished, timeout=120000):
        chat.send()
    qtbot.waitUntil(lambda: not chat.is_busy(), timeout=60000)
    first_turns = [dict(m) for m in chat.conversation.history]
    window.activateWindow()
    with qtbot.waitSignal(chat.saved_changed, timeout=10000):
        qtbot.keyClick(chat.input, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    files = list((pathlib.Path(os.environ["NIBBLE_HOME"]) / "conversations").glob("*.json"))
    assert files == [chat.saved_path]
    on_disk = json.loads(files[0].read_text())
    assert on_disk["model"] == str(tiny_chat_gguf) and on_disk["history"] == first_turns
    assert on_disk["title"] == "Hello there"

    chat.clear_btn.click()
    chat.unload_btn.click()
    assert chat.conversation.history == [] and chat.runtime is None
    assert chat.saved.list.count() == 1 and "Hello there" in chat.saved.list.item(0).text()
    chat.saved.list.setCurrentRow(0)
    chat.saved.open_btn.click()
    assert chat.conversation.history == first_turns
    assert chat.picker.current().path == str(tiny_chat_gguf)  # the model it was held with
    assert first_turns[1]["content"].strip()[:5] in chat.transcript.toPlainText()

    prompts = []
    chat_prompt_ids = Runtime.chat_prompt_ids
    monkeypatch.setattr(Runtime, "chat_prompt_ids", lambda self, m: prompts.append(m) or chat_prompt_ids(self, m))
    chat.input.setPlainText("And again")
    with qtbot.waitSignal(chat.reply_finished, timeout=120000):
        chat.send()
    qtbot.waitUntil(lambda: not chat.is_busy(), timeout=60000)
    sent = [m for m in prompts[-1] if m["role"] != "system"]
    assert sent == first_turns + [{"role": "user", "content": "And again"}]  # the model saw the earlier turns
    chat.save_btn.click()
    assert [m["role"] for m in json.loads(files[0].read_text())["history"]] == ["user", "assistant"] * 2


def test_conversation_files_refused_in_one_line(tmp_path):
    from app.services import (
        NibbleError,
        list_conversations,
        load_conversation,
        save_conversation,
    )

    good = save_conversation([{"role": "user", "content": "hi"}], model="m.gguf", path=tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"history": [{"role": "wizard", "content": 1}]}')
    for path in (bad, wrong):
        with pytest.raises(NibbleError) as err:
            load_conversation(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert [c.path for c in list_conversations(tmp_path)] == [good]  # the others are left alone, not listed
    assert bad.read_text() == "{not json"
    with pytest.raises(NibbleError, match="empty"):
        save_conversation([], model="m.gguf", path=tmp_path / "empty.json")
    assert not (tmp_path / "empty.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.json", "good.json", "wrong.json"]
