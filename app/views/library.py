"""Library: the originals and the outputs made from them (by the app or the `nibble` command), with what can
be done to each: open, compare, analyse, publish, hand to Ollama or LM Studio, forget, delete."""

from __future__ import annotations

import pathlib
from typing import ClassVar

from PySide6.QtCore import QFileSystemWatcher, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from app import services
from app.services import GGUF, ORIGINAL, human_bytes
from app.state import AppState, ModelEntry
from app.views import View
from app.views.output_actions import OutputActions, copy_path, show_in_file_manager
from app.widgets import Banner, path_size


class LibraryView(View):
    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        lay = QVBoxLayout(self)
        self.note = QLabel("Originals and the outputs made from them, here or with the nibble command. "
                           "Right-click a model for everything you can do with it.")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Kind", "Type", "Size", "Path"])
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        lay.addWidget(self.tree, 1)
        row = QHBoxLayout()
        self.chat_btn = QPushButton("Chat")
        self.compare_btn = QPushButton("Compare")
        self.analyse_btn = QPushButton("Analyse")
        self.quantize_btn = QPushButton("Quantize…")
        self.publish_btn = QPushButton("Publish…")
        self.show_btn = QPushButton("Show folder")
        for b, tip in ((self.chat_btn, "Open in Chat"), (self.compare_btn, "Compare with the original"),
                       (self.show_btn, "Show in file manager")):
            b.setToolTip(tip)
        self.forget_btn = QPushButton("Forget")
        self.delete_btn = QPushButton("Delete…")
        self.refresh_btn = QPushButton("Refresh")
        for b in (self.chat_btn, self.compare_btn, self.analyse_btn, self.quantize_btn, self.publish_btn):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        row2 = QHBoxLayout()  # a second row keeps the view usable at 900x600
        for b in (self.show_btn, self.forget_btn, self.delete_btn):
            row2.addWidget(b)
        row2.addStretch(1)
        row2.addWidget(self.refresh_btn)
        lay.addLayout(row2)
        self.actions = OutputActions(self, self.banner)
        self.refresh_btn.setShortcut("F5")
        self.delete_btn.setShortcut(QKeySequence.StandardKey.Delete)
        self.refresh_btn.clicked.connect(self.refresh)
        for b, what in ((self.chat_btn, "chat"), (self.compare_btn, "compare"), (self.analyse_btn, "analyse"),
                        (self.quantize_btn, "quantize"), (self.publish_btn, "publish"), (self.show_btn, "show"),
                        (self.forget_btn, "forget"), (self.delete_btn, "delete")):
            b.clicked.connect(lambda _=False, w=what: self._act(w))
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda *_: self._act("chat"))
        self.tree.customContextMenuRequested.connect(self._context_menu)
        state.models_changed.connect(self.refresh)
        # the `nibble` command writes the same library: its outputs appear here as it records them
        self._later = QTimer(self, singleShot=True, interval=300)
        self._later.timeout.connect(self._library_written)
        self._stamp = self._library_stamp()
        self.watcher = QFileSystemWatcher(self)
        folder = services.library_file().parent
        folder.mkdir(parents=True, exist_ok=True)
        self.watcher.addPath(str(folder))
        self.watcher.directoryChanged.connect(lambda _p: self._later.start())
        self.refresh()

    def refresh(self) -> None:
        chosen = self.selected()
        self.tree.clear()
        models = self.state.models()
        originals: dict[str, QTreeWidgetItem] = {}

        def item_for(e: ModelEntry) -> QTreeWidgetItem:
            p = pathlib.Path(e.path)
            it = QTreeWidgetItem([e.name or p.name, e.kind, e.qtype, human_bytes(path_size(p)), str(p)])
            it.setData(0, Qt.ItemDataRole.UserRole, e)
            return it

        for e in models:
            if e.kind == ORIGINAL:
                originals[str(pathlib.Path(e.path).resolve())] = it = item_for(e)
                self.tree.addTopLevelItem(it)
        for e in models:
            if e.kind == ORIGINAL:
                continue
            parent = originals.get(str(pathlib.Path(e.origin).resolve())) if e.origin else None
            it = item_for(e)
            (parent.addChild(it) if parent else self.tree.addTopLevelItem(it))
        self.tree.expandAll()
        if chosen is not None:
            self.select_path(chosen.path)
        self._update_buttons()

    @staticmethod
    def _library_stamp():
        try:
            st = services.library_file().stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _library_written(self) -> None:
        stamp = self._library_stamp()
        if stamp != self._stamp:  # not the lock file or a temporary coming and going
            self._stamp = stamp
            self.refresh()

    def items(self) -> list[QTreeWidgetItem]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            out += [top] + [top.child(j) for j in range(top.childCount())]
        return out

    def select_path(self, path: str) -> bool:
        want = pathlib.Path(path).resolve()
        for it in self.items():
            if pathlib.Path(it.data(0, Qt.ItemDataRole.UserRole).path).resolve() == want:
                self.tree.setCurrentItem(it)
                return True
        return False

    def selected(self) -> ModelEntry | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    # -- what can be done to a model ---------------------------------------------------------------

    def available(self, e: ModelEntry | None) -> dict[str, bool]:
        """Each action and whether it applies to ``e``."""
        made = e is not None and e.kind != ORIGINAL
        return {
            "chat": e is not None, "compare": made and bool(e.origin), "analyse": made and bool(e.origin),
            "quantize": e is not None and e.kind == ORIGINAL, "show": e is not None, "copy": e is not None,
            "publish": made, "ollama": made and e.kind == GGUF, "lmstudio": made and e.kind == GGUF,
            "forget": e is not None, "delete": made,
        }

    LABELS: ClassVar[dict[str, str]] = {"chat": "Open in Chat", "compare": "Compare with original", "analyse": "Analyse",
              "quantize": "Quantize…", "show": "Show in file manager", "copy": "Copy path", "publish": "Publish…",
              "ollama": "Use in Ollama", "lmstudio": "Use in LM Studio", "forget": "Forget", "delete": "Delete…"}

    def menu_for(self, e: ModelEntry) -> QMenu:
        """The context menu of ``e``: every action, those that do not apply greyed out."""
        menu = QMenu(self)
        can = self.available(e)
        for group in (("chat", "compare", "analyse", "quantize"), ("show", "copy"), ("publish", "ollama", "lmstudio"),
                      ("forget", "delete")):
            if menu.actions():
                menu.addSeparator()
            for what in group:
                act = QAction(self.LABELS[what], menu)
                act.setEnabled(can[what])
                act.triggered.connect(lambda _=False, w=what: self._act(w))
                menu.addAction(act)
        return menu

    def _context_menu(self, pos) -> None:
        item = self.tree.itemAt(pos)
        if item is None:
            return
        self.tree.setCurrentItem(item)
        self.menu_for(item.data(0, Qt.ItemDataRole.UserRole)).popup(self.tree.viewport().mapToGlobal(pos))

    def _update_buttons(self) -> None:
        can = self.available(self.selected())
        for b, what in ((self.chat_btn, "chat"), (self.compare_btn, "compare"), (self.analyse_btn, "analyse"),
                        (self.quantize_btn, "quantize"), (self.publish_btn, "publish"), (self.show_btn, "show"),
                        (self.forget_btn, "forget"), (self.delete_btn, "delete")):
            b.setEnabled(can[what])

    def _act(self, what: str) -> None:
        e = self.selected()
        if e is None or not self.available(e)[what]:
            return
        if what in ("chat", "quantize"):
            self.state.open_in("Chat" if what == "chat" else "Quantize", model=e.path)
        elif what in ("compare", "analyse"):
            self.state.open_in("Compare" if what == "compare" else "Analysis", original=e.origin, quantized=e.path)
        elif what == "show":
            show_in_file_manager(e.path, self.banner)
        elif what == "copy":
            copy_path(e.path, self.banner)
        elif what == "publish":
            self.actions.publish(e.path)
        elif what == "ollama":
            self.actions.use_in_ollama(e.path)
        elif what == "lmstudio":
            self.actions.use_in_lmstudio(e.path)
        elif what == "forget":
            try:
                self.state.forget_model(e.path)
            except services.NibbleError as exc:
                self.banner.show_message(str(exc))
                return
            self.banner.show_message(f"Forgot {e.name or pathlib.Path(e.path).name}; its files are where they were", "info")
        elif what == "delete":
            self.delete(e)

    def delete(self, e: ModelEntry) -> bool:
        """Ask, then delete an output Nibble made; anything else is refused in one line and left alone."""
        why = services.why_not_deletable(e.path)
        if why:
            self.banner.show_message(why)
            return False
        size = human_bytes(path_size(e.path))
        answer = QMessageBox.question(
            self, "Delete", f"Delete {e.path} ({size}) from disk? The original it was made from stays.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            gone = services.delete_model(e.path)
        except services.NibbleError as exc:
            self.banner.show_message(str(exc))
            return False
        self.state.forget_model(str(gone))
        self.banner.show_message(f"Deleted {gone} ({size})", "info")
        return True

    def activated(self) -> None:
        self.refresh()

    def is_busy(self) -> bool:
        return self.actions.busy()
