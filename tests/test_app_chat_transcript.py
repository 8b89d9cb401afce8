"""Chat's transcript lays out only what changed in a turn; what the user reads after Send, Regenerate, Clear and
opening a saved conversation is the conversation itself, and each Copy link copies its own message."""

from __future__ import annotations

from app.state import ModelEntry


def _as_read(history: list[dict]) -> str:
    """The transcript's text worked out from the history alone: a header per message ("You" or "Model" and its
    Copy link), then the message; a reply as Qt renders its Markdown on its own."""
    from PySide6.QtGui import QTextDocument

    parts = []
    for m in history:
        if m["role"] == "user":
            body = m["content"]
        else:
            doc = QTextDocument()
            doc.setMarkdown(m["content"], QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
            body = doc.toPlainText()
        parts.append(f"{'You' if m['role'] == 'user' else 'Model'}   Copy\n{body}")
    return "\n".join(parts)


def _shown(chat) -> str:
    return chat.transcript.toPlainText().rstrip("\n")


def _copy_links_copy_their_messages(qtbot, chat) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QTextCursor

    for i, m in enumerate(chat.conversation.history):
        QGuiApplication.clipboard().clear()
        cursor = QTextCursor(chat.transcript.document())
        cursor.setPosition(chat.transcript.copy_link_position(i) + 1)
        chat.transcript.ensureCursorVisible()
        chat.transcript.setTextCursor(cursor)
        chat.transcript.ensureCursorVisible()
        with qtbot.waitSignal(chat.transcript.copied, timeout=10000) as copied:
            qtbot.mouseClick(chat.transcript.viewport(), Qt.MouseButton.LeftButton,
                             pos=chat.transcript.cursorRect(cursor).center())
        assert copied.args == [i] and QGuiApplication.clipboard().text() == m["content"]


def _reply(qtbot, chat, start) -> None:
    with qtbot.waitSignal(chat.reply_finished, timeout=120000):
        start()
    qtbot.waitUntil(lambda: not chat.is_busy(), timeout=60000)


def test_transcript_follows_send_regenerate_clear_and_open(qtbot, window, tiny_chat_gguf):
    window.show_view("Chat")
    chat = window.views["Chat"]
    chat.picker.set_model(ModelEntry(str(tiny_chat_gguf), "gguf"))
    chat.max_tokens.setValue(8)
    chat.temperature.setValue(1.5)  # sampled: Regenerate writes another reply
    laid_out = []
    chat.transcript.document().contentsChange.connect(lambda pos, removed, added: laid_out.append(pos))

    marks = []
    for text in ("Hello there", "And *again*"):
        marks.append(len(laid_out))
        chat.input.setPlainText(text)
        _reply(qtbot, chat, chat.send)
        assert [m["role"] for m in chat.conversation.history][-2:] == ["user", "assistant"]
        assert _shown(chat) == _as_read(chat.conversation.history)
    # the second turn left the first one's text alone: every change it made lies after the first turn
    first_turn_end = len(_as_read(chat.conversation.history[:2]))
    assert len(laid_out) > marks[1] and min(laid_out[marks[1]:]) >= first_turn_end
    _copy_links_copy_their_messages(qtbot, chat)

    before = [dict(m) for m in chat.conversation.history]
    _reply(qtbot, chat, chat.regen_btn.click)
    assert chat.conversation.history[:3] == before[:3] and len(chat.conversation.history) == 4
    assert _shown(chat) == _as_read(chat.conversation.history)
    _copy_links_copy_their_messages(qtbot, chat)

    chat.save_btn.click()
    qtbot.waitUntil(lambda: chat.saved.list.count() == 1, timeout=10000)
    saved = [dict(m) for m in chat.conversation.history]
    chat.clear_btn.click()
    assert chat.conversation.history == [] and _shown(chat) == ""

    chat.saved.list.setCurrentRow(0)
    chat.saved.open_btn.click()
    assert chat.conversation.history == saved and _shown(chat) == _as_read(saved)
    _copy_links_copy_their_messages(qtbot, chat)
