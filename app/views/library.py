"""Library: the originals and the outputs made from them, with actions to open each."""

from __future__ import annotations

import pathlib

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from app.services import ORIGINAL, human_bytes
from app.state import AppState, ModelEntry
from app.views import View
from app.widgets import path_size


class LibraryView(View):
    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        lay = QVBoxLayout(self)
        self.note = QLabel()
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Kind", "Type", "Size", "Path"])
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        lay.addWidget(self.tree, 1)
        row = QHBoxLayout()
        self.chat_btn = QPushButton("Open in Chat")
        self.compare_btn = QPushButton("Compare with original")
        self.analyse_btn = QPushButton("Analyse")
        self.quantize_btn = QPushButton("Quantize…")
        self.show_btn = QPushButton("Show in file manager")
        self.refresh_btn = QPushButton("Refresh")
        for b in (self.chat_btn, self.compare_btn, self.analyse_btn, self.quantize_btn, self.show_btn):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.refresh_btn)
        lay.addLayout(row)
        self.refresh_btn.setShortcut("F5")
        self.refresh_btn.clicked.connect(self.refresh)
        self.chat_btn.clicked.connect(lambda: self._act("chat"))
        self.compare_btn.clicked.connect(lambda: self._act("compare"))
        self.analyse_btn.clicked.connect(lambda: self._act("analyse"))
        self.quantize_btn.clicked.connect(lambda: self._act("quantize"))
        self.show_btn.clicked.connect(lambda: self._act("show"))
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda *_: self._act("chat"))
        state.models_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        self.tree.clear()
        models = self.state.models()
        self.note.setText("Originals and the outputs made from them.")
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
        self._update_buttons()

    def selected(self) -> ModelEntry | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    def _update_buttons(self) -> None:
        e = self.selected()
        for b in (self.chat_btn, self.show_btn):
            b.setEnabled(e is not None)
        self.compare_btn.setEnabled(e is not None and e.kind != ORIGINAL and bool(e.origin))
        self.analyse_btn.setEnabled(e is not None and bool(e.origin))
        self.quantize_btn.setEnabled(e is not None and e.kind == ORIGINAL)

    def _act(self, what: str) -> None:
        e = self.selected()
        if e is None:
            return
        if what == "chat":
            self.state.open_in("Chat", model=e.path)
        elif what == "compare":
            self.state.open_in("Compare", original=e.origin, quantized=e.path)
        elif what == "analyse":
            self.state.open_in("Analysis", original=e.origin, quantized=e.path)
        elif what == "quantize":
            self.state.open_in("Quantize", model=e.path)
        elif what == "show":
            p = pathlib.Path(e.path)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(p.parent if p.is_file() else p)))

    def activated(self) -> None:
        self.refresh()
