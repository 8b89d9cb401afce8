"""Chat's smaller parts: the message box (Enter sends, Shift+Enter adds a line) and the saved conversations."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPlainTextEdit, QPushButton, \
    QVBoxLayout, QWidget

from app.services import SavedConversation


class ChatInput(QPlainTextEdit):
    """The message box: Enter (or Ctrl+Enter) sends, Shift+Enter starts a new line, Tab leaves the box."""

    submitted = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setPlaceholderText("Type a message — Enter sends, Shift+Enter adds a line")
        self.setTabChangesFocus(True)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            mods = event.modifiers()
            if mods & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            event.accept()
            return
        super().keyPressEvent(event)


class SavedList(QWidget):
    """The saved conversations, newest first: open one to continue it, or delete it."""

    open_requested = Signal(object)  # SavedConversation
    delete_requested = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.empty = QLabel("No saved conversations yet. Save one with Ctrl+S.")
        self.empty.setWordWrap(True)
        lay.addWidget(self.empty)
        lay.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.open_btn = QPushButton("Open")
        self.delete_btn = QPushButton("Delete")
        row.addStretch(1)
        row.addWidget(self.delete_btn)
        row.addWidget(self.open_btn)
        lay.addLayout(row)
        self.open_btn.clicked.connect(self._open)
        self.list.itemActivated.connect(lambda _i: self._open())
        self.delete_btn.clicked.connect(self._delete)
        self.list.currentRowChanged.connect(lambda _r: self._update())
        self._update()

    def show_conversations(self, items: list[SavedConversation]) -> None:
        self.list.clear()
        for c in items:
            model = c.model.rstrip("/").rsplit("/", 1)[-1] or "no model"
            item = QListWidgetItem(f"{c.title}\n{c.saved.replace('T', ' ')[:16]} · {model}")
            item.setData(Qt.ItemDataRole.UserRole, c)
            item.setToolTip(c.model)
            self.list.addItem(item)
        self._update()

    def current(self) -> SavedConversation | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _open(self) -> None:
        if self.current() is not None:
            self.open_requested.emit(self.current())

    def _delete(self) -> None:
        if self.current() is not None:
            self.delete_requested.emit(self.current())

    def _update(self) -> None:
        self.empty.setVisible(self.list.count() == 0)
        self.list.setVisible(self.list.count() > 0)
        has = self.current() is not None
        self.open_btn.setEnabled(has)
        self.delete_btn.setEnabled(has)
