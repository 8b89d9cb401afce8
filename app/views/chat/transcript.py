"""The conversation as the user reads it: replies rendered from Markdown (fenced code in a monospace block,
lists, bold, inline code), a Copy link on each message, and a reading column of bounded width."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import QTextBrowser

from app.style import colors

READING_CHARS = 100  # the widest a line of the conversation gets, in average characters
_MARKDOWN = QTextDocument.MarkdownFeature(QTextDocument.MarkdownFeature.MarkdownDialectGitHub.value
                                          | QTextDocument.MarkdownFeature.MarkdownNoHTML.value)
CURSOR = "▍"  # the end of a reply that is still coming


class Transcript(QTextBrowser):
    """Shows ``messages`` (user / assistant turns) and, while one streams, the reply so far."""

    copied = Signal(int)  # index of the message put on the clipboard

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._anchor)
        self.messages: list[dict] = []
        self._starts: list[int] = []  # where each message starts in the document
        self._tail = 0  # where the streaming reply starts in the document
        self._streaming: str | None = None

    # -- content -----------------------------------------------------------------------------------

    def set_messages(self, messages: list[dict], streaming: str | None = None, *, rebuild: bool = False) -> None:
        """Show ``messages``. Only what changed is laid out: the messages shown that still lead the history stay
        as they are, the rest of the document is replaced (a finished reply is appended, Regenerate drops the
        last reply, Clear or another conversation starts afresh). ``rebuild``: lay everything out anew."""
        new = [dict(m) for m in messages]
        keep = 0
        if not rebuild:
            while keep < min(len(new), len(self.messages)) and new[keep] == self.messages[keep]:
                keep += 1
        doc = self.document()
        cur = QTextCursor(doc)
        if keep == 0:
            doc.clear()
            self._starts = []
        else:
            cur.setPosition(self._starts[keep] if keep < len(self._starts) else self._tail)
            cur.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            cur.removeSelectedText()
            del self._starts[keep:]
        for i in range(keep, len(new)):
            self._starts.append(cur.position())
            self._insert(cur, new[i]["role"], new[i]["content"], i)
        self.messages = new
        self._tail = cur.position()
        self._streaming = None
        self._fit_column()
        if streaming is not None:
            self.set_streaming(streaming)
        else:
            self.moveCursor(QTextCursor.MoveOperation.End)

    def set_streaming(self, text: str | None) -> None:
        """Show the reply under way (None: none); only the tail of the document is rebuilt."""
        self._streaming = text
        cur = QTextCursor(self.document())
        cur.setPosition(self._tail)
        cur.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cur.removeSelectedText()
        if text is not None:
            self._insert(cur, "assistant", text + CURSOR, None)
        self.moveCursor(QTextCursor.MoveOperation.End)

    def _insert(self, cur: QTextCursor, role: str, content: str, index: int | None) -> None:
        s = colors()
        plain = QTextCharFormat()
        if cur.position() > 0:
            top = QTextBlockFormat()
            top.setTopMargin(14)
            cur.insertBlock(top, plain)
        head = QTextCharFormat()
        head.setFontWeight(QFont.Weight.Bold)
        head.setForeground(QColor(s.muted))
        cur.insertText("You" if role == "user" else "Model", head)
        if index is not None:
            link = QTextCharFormat()
            link.setAnchor(True)
            link.setAnchorHref(f"copy:{index}")
            link.setForeground(QColor(s.link))
            link.setToolTip("Copy this message")
            cur.insertText("   ", plain)
            cur.insertText("Copy", link)
        cur.insertBlock(QTextBlockFormat(), plain)
        start = cur.position()
        if role == "user":
            cur.insertText(content, plain)
        else:
            cur.insertMarkdown(content, _MARKDOWN)
        self._style_code(start, cur.position())

    def _style_code(self, start: int, end: int) -> None:
        """Fenced code gets a tinted block in the system's fixed-width font."""
        doc = self.document()
        block = doc.findBlock(start)
        fixed = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        while block.isValid() and block.position() <= end:
            if block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence):
                c = QTextCursor(block)
                bf = QTextBlockFormat()
                bf.setBackground(QColor(colors().code_background))
                c.mergeBlockFormat(bf)
                c.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
                cf = QTextCharFormat()
                cf.setFontFamilies([fixed.family(), "monospace"])
                cf.setFontFixedPitch(True)
                c.mergeCharFormat(cf)
            block = block.next()

    # -- copy --------------------------------------------------------------------------------------

    def _anchor(self, url: QUrl) -> None:
        text = url.toString()
        if text.startswith("copy:"):
            self.copy_message(int(text[len("copy:"):]))

    def copy_message(self, index: int) -> None:
        """Put message ``index`` on the clipboard as it was written (Markdown for replies)."""
        if 0 <= index < len(self.messages):
            QGuiApplication.clipboard().setText(self.messages[index]["content"])
            self.copied.emit(index)

    def copy_link_position(self, index: int) -> int:
        """The document position of message ``index``'s Copy link (-1: none)."""
        block = self.document().begin()
        while block.isValid():
            it = block.begin()
            while not it.atEnd():
                frag = it.fragment()
                if frag.charFormat().anchorHref() == f"copy:{index}":
                    return frag.position()
                it += 1
            block = block.next()
        return -1

    # -- the reading column ------------------------------------------------------------------------

    def reading_width(self) -> int:
        return self.fontMetrics().averageCharWidth() * READING_CHARS

    def _fit_column(self) -> None:
        """Lines never get longer than the reading width: wider views get margins on both sides."""
        side = max(6, (self.viewport().width() - self.reading_width()) // 2)
        root = self.document().rootFrame()
        fmt = root.frameFormat()
        if fmt.leftMargin() != side or fmt.rightMargin() != side:
            fmt.setLeftMargin(side)
            fmt.setRightMargin(side)
            root.setFrameFormat(fmt)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_column()

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # headers, links and code blocks take the new scheme
            streaming = self._streaming
            self.set_messages(self.messages, streaming, rebuild=True)
