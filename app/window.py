"""The main window: a sidebar of views (Quantize, Chat, Compare, Analysis, Library) over a stack."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QEvent, QSize, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app import style, sysinfo
from app.settings import APPEARANCE, WINDOW_GEOMETRY, WINDOW_VIEW, splitter_setting
from app.state import AppState
from app.views import View

VIEW_NAMES = ("Quantize", "Chat", "Compare", "Analysis", "Library")
MINIMUM_SIZE = QSize(900, 600)  # the smallest window every view is laid out for (tests/test_app_window.py)


def _make_views(state: AppState) -> dict[str, View]:
    from app.views.analysis import AnalysisView
    from app.views.chat import ChatView
    from app.views.compare import CompareView
    from app.views.library import LibraryView
    from app.views.quantize import QuantizeWizard

    return {
        "Quantize": QuantizeWizard(state),
        "Chat": ChatView(state),
        "Compare": CompareView(state),
        "Analysis": AnalysisView(state),
        "Library": LibraryView(state),
    }


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About Nibble")
        lay = QVBoxLayout(self)
        head = QLabel("<h2>Nibble</h2><p>Quantize Hugging Face models to GGUF or AWQ, chat with them, "
                      "and see what quantization cost.</p>")
        head.setWordWrap(True)
        lay.addWidget(head)
        form = QFormLayout()
        self.versions = sysinfo.versions()
        for name, value in self.versions.items():
            v = QLabel(value)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(name + ":", v)
        lay.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        lay.addWidget(buttons)


class MainWindow(QMainWindow):
    def __init__(self, state: AppState | None = None):
        super().__init__()
        self.state = state or AppState()
        self.setWindowTitle("Nibble")
        avail = self.screen().availableGeometry().size()  # a screen smaller than that still gets the whole window
        self.setMinimumSize(MINIMUM_SIZE.boundedTo(avail) if avail.isValid() else MINIMUM_SIZE)
        self.apply_appearance(self.state.get(APPEARANCE))

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(140)
        self.sidebar.setFrameShape(QListWidget.Shape.NoFrame)
        self.sidebar.setStyleSheet(
            "#sidebar { background: palette(alternate-base); padding-top: 8px; }"
            "#sidebar::item { padding: 10px 14px; }"
            "#sidebar::item:selected { background: palette(highlight); color: palette(highlighted-text); }"
        )
        self.stack = QStackedWidget()
        row.addWidget(self.sidebar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.views = _make_views(self.state)
        for i, name in enumerate(VIEW_NAMES):
            item = QListWidgetItem(name)
            item.setToolTip(f"{name} (Ctrl+{i + 1})")
            self.sidebar.addItem(item)
            self.stack.addWidget(self.views[name])
        self.sidebar.currentRowChanged.connect(self._on_row)
        self.state.open_requested.connect(self._open_requested)

        self._build_menus()
        self.statusBar().showMessage("Ready")
        self._restore()

    # -- menus and shortcuts -----------------------------------------------------------------------

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        new_q = QAction("&New quantization", self, shortcut=QKeySequence.StandardKey.New)
        new_q.triggered.connect(self._new_quantization)
        file_menu.addAction(new_q)
        open_m = QAction("&Open model…", self, shortcut=QKeySequence.StandardKey.Open)
        open_m.triggered.connect(self._open_model)
        file_menu.addAction(open_m)
        file_menu.addSeparator()
        quit_a = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_a.triggered.connect(self.close)
        file_menu.addAction(quit_a)

        view_menu = mb.addMenu("&View")
        for i, name in enumerate(VIEW_NAMES):
            act = QAction(name, self, shortcut=QKeySequence(f"Ctrl+{i + 1}"))
            act.triggered.connect(lambda _=False, n=name: self.show_view(n))
            view_menu.addAction(act)
            self.addAction(act)

        view_menu.addSeparator()
        looks = view_menu.addMenu("&Appearance")
        self.appearance_actions = {}
        group = QActionGroup(self)
        for key, label in (("system", "Follow the &system"), ("light", "&Light"), ("dark", "&Dark")):
            act = QAction(label, self, checkable=True)
            act.setChecked(key == style.appearance())
            act.triggered.connect(lambda _=False, k=key: self.apply_appearance(k))
            group.addAction(act)
            looks.addAction(act)
            self.appearance_actions[key] = act

        help_menu = mb.addMenu("&Help")
        about = QAction("&About Nibble", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)

    def apply_appearance(self, appearance: str) -> None:
        """Light, dark or the system's scheme, for the whole app; remembered."""
        from PySide6.QtWidgets import QApplication

        if appearance not in style.APPEARANCES:
            appearance = "system"
        style.apply_style(QApplication.instance(), appearance)
        self.state.put(APPEARANCE, appearance)
        for key, act in getattr(self, "appearance_actions", {}).items():
            act.setChecked(key == appearance)

    def show_view(self, name: str) -> None:
        self.sidebar.setCurrentRow(VIEW_NAMES.index(name))

    def current_view_name(self) -> str:
        return VIEW_NAMES[self.stack.currentIndex()]

    def _on_row(self, row: int) -> None:
        if row < 0:
            return
        self.stack.setCurrentIndex(row)
        self.state.put(WINDOW_VIEW, VIEW_NAMES[row])
        self.views[VIEW_NAMES[row]].activated()

    def _open_requested(self, view: str, payload: dict) -> None:
        self.show_view(view)
        self.views[view].open_payload(payload or {})

    def _new_quantization(self) -> None:
        self.show_view("Quantize")
        self.views["Quantize"].restart()

    def _open_model(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        from app.state import ModelEntry, kind_of

        path = QFileDialog.getExistingDirectory(self, "Open a model folder")
        if path:
            self.state.add_model(ModelEntry(path, kind_of(path)))
            self.statusBar().showMessage(f"Added {path}", 5000)

    def show_about(self) -> AboutDialog:
        dlg = AboutDialog(self)
        dlg.setModal(True)
        dlg.show()
        return dlg

    # -- geometry ----------------------------------------------------------------------------------

    def _restore(self) -> None:
        geo = self.state.get(WINDOW_GEOMETRY)
        if isinstance(geo, (QByteArray, bytes)) and not self.restoreGeometry(QByteArray(geo)):
            geo = None
        if not geo:
            self.resize(1280, 720)
        name = self.state.get(WINDOW_VIEW)
        self.show_view(name if name in VIEW_NAMES else "Quantize")
        for setting, splitter in self._splitters():
            saved = self.state.get(setting)
            if isinstance(saved, (QByteArray, bytes)):
                splitter.restoreState(QByteArray(saved))

    def _splitters(self):
        """Every view's splitters, each with the setting its sizes are kept in."""
        for name, view in self.views.items():
            for i, splitter in enumerate(view.findChildren(QSplitter)):
                yield splitter_setting(name, i), splitter

    def closeEvent(self, event: QEvent) -> None:
        busy = [n for n, v in self.views.items() if v.is_busy()]
        if busy and self.isVisible():
            answer = QMessageBox.question(
                self, "Nibble", f"{', '.join(busy)} still running. Stop and quit?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        for v in self.views.values():
            v.shutdown()
        self.state.put(WINDOW_GEOMETRY, self.saveGeometry())
        for setting, splitter in self._splitters():
            self.state.put(setting, splitter.saveState())
        self.state.settings.sync()
        super().closeEvent(event)
