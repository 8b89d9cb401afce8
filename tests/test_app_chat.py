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
