"""Small widgets the views share."""

from __future__ import annotations

from contextlib import contextmanager

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from app.services import GGUF, MODEL_KINDS
from app.state import AppState, ModelEntry, kind_of


class Banner(QFrame):
    """A one-line message in place: what went wrong, or what to do next."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 8, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
        self.hide()

    def show_message(self, text: str, kind: str = "error") -> None:
        from app.style import banner_color

        colour = banner_color(kind)
        self.setStyleSheet(f"Banner {{ border: 1px solid {colour}; border-radius: 4px; }}")
        self.label.setText(text)
        self.show()

    def clear(self) -> None:
        self.label.clear()
        self.hide()


class ModelPicker(QWidget):
    """A combo box of the models the app knows (optionally only some kinds) with a Browse button."""

    changed = Signal(object)  # ModelEntry or None

    def __init__(self, state: AppState, kinds: tuple[str, ...] = MODEL_KINDS, parent=None):
        super().__init__(parent)
        self.state = state
        self.kinds = kinds
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(24)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        lay.addWidget(self.combo, 1)
        self.browse = QPushButton("Browse…")
        lay.addWidget(self.browse)
        self.browse.clicked.connect(self._browse)
        self.combo.currentIndexChanged.connect(lambda _i: self.changed.emit(self.current()))
        state.models_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        cur = self.current()
        self.combo.blockSignals(True)
        self.combo.clear()
        for e in self.state.models():
            if e.kind in self.kinds:
                self.combo.addItem(e.label, e)
        if self.combo.count() == 0:
            self.combo.addItem("(no model yet — browse for one)", None)
        self.combo.blockSignals(False)
        if cur is not None:
            self.select_path(cur.path, emit=False)
        self.changed.emit(self.current())

    def current(self) -> ModelEntry | None:
        return self.combo.currentData()

    def select_path(self, path: str, emit: bool = True) -> bool:
        import pathlib

        want = str(pathlib.Path(path).resolve())
        for i in range(self.combo.count()):
            e = self.combo.itemData(i)
            if e is not None and str(pathlib.Path(e.path).resolve()) == want:
                if not emit:
                    self.combo.blockSignals(True)
                self.combo.setCurrentIndex(i)
                self.combo.blockSignals(False)
                return True
        return False

    def set_model(self, entry: ModelEntry) -> None:
        """Add (if new) and select."""
        if not self.select_path(entry.path):
            self.state.add_model(entry)
            self.select_path(entry.path)

    def _browse(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        if GGUF in self.kinds:
            path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "", "GGUF models (*.gguf);;All files (*)")
            if not path:
                path = QFileDialog.getExistingDirectory(self, "Or open a model folder")
        else:
            path = QFileDialog.getExistingDirectory(self, "Open a model folder")
        if path:
            self.set_model(ModelEntry(path, kind_of(path)))


def path_size(path) -> int | None:
    """Bytes of a file, or of everything in a folder."""
    import pathlib

    p = pathlib.Path(path)
    try:
        if p.is_file():
            return p.stat().st_size
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError:
        return None


@contextmanager
def one_change(table):
    """Cells set inside are re-measured once, at the end: each change on its own makes the table measure its
    sized-to-contents columns over every row again (about 3 ms a cell for the type table)."""
    model = table.model()
    was = model.blockSignals(True)
    try:
        yield
    finally:
        model.blockSignals(was)
        if model.rowCount() and not was:
            model.dataChanged.emit(model.index(0, 0), model.index(model.rowCount() - 1, model.columnCount() - 1))
