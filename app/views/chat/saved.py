"""Saved conversations in Chat: the list (newest first) and saving, reopening and deleting them."""

from __future__ import annotations

import pathlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread
from app.services import SavedConversation
from app.state import ModelEntry, kind_of


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
        c = self.current()
        if c is None:
            return
        from PySide6.QtWidgets import QMessageBox

        answer = QMessageBox.question(self, "Delete conversation", f"Delete the saved conversation “{c.title}”?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_requested.emit(c)

    def _update(self) -> None:
        self.empty.setVisible(self.list.count() == 0)
        self.list.setVisible(self.list.count() > 0)
        has = self.current() is not None
        self.open_btn.setEnabled(has)
        self.delete_btn.setEnabled(has)


class SavedConversations:
    """What ChatView does with saved conversations (it mixes this in; the widgets are its own)."""

    def save(self) -> None:
        """Save the conversation (again to the same file once it has one)."""
        if self.is_busy() or not self.conversation.history:
            return
        entry = self.picker.current()
        model = self.runtime_path or (entry.path if entry else "")
        try:
            self.saved_path = services.save_conversation(self.conversation.history, model=model,
                                                         settings=self.settings(), path=self.saved_path)
        except services.NibbleError as exc:
            self.banner.show_message(str(exc))
            return
        self.state_message(f"Conversation saved to {self.saved_path}")
        self.refresh_saved()

    def refresh_saved(self) -> None:
        """Read the list of saved conversations in a worker (there may be many files)."""
        def show(items):
            self.saved.show_conversations(items)
            self.saved_changed.emit()

        run_in_thread(services.list_conversations, on_result=show, on_error=self.banner.show_message)

    def open_saved(self, saved: SavedConversation) -> None:
        """Continue a saved conversation: its history, its settings and the model it was held with."""
        if self.is_busy():
            return
        try:
            saved = services.load_conversation(saved.path)  # as it is on disk now
        except services.NibbleError as exc:
            self.banner.show_message(str(exc))
            return
        self.banner.clear()
        self.conversation.reset()
        self.conversation.history.extend(saved.history)
        self.saved_path = saved.path
        s = saved.settings
        self.system.setPlainText(s.system_prompt or "")
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.max_tokens.setValue(s.max_tokens)
        self.stats.clear()
        self.fill.setValue(0)
        if saved.model and pathlib.Path(saved.model).exists():
            self.picker.set_model(ModelEntry(saved.model, kind_of(saved.model)))
        elif saved.model:
            self.banner.show_message(f"The model this conversation was held with, {saved.model}, is no longer "
                                     "there; pick another to continue it.", "warn")
        self._render()
        self._update_buttons()
        self.input.setFocus()

    def _delete_saved(self, saved: SavedConversation) -> None:
        try:
            services.delete_conversation(saved.path)
        except services.NibbleError as exc:
            self.banner.show_message(str(exc))
        if self.saved_path == saved.path:
            self.saved_path = None
        self.refresh_saved()
