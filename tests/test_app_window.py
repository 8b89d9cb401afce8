"""The main window: title, the five views, shortcuts, remembered geometry and view, About."""

from __future__ import annotations

import subprocess
import sys

from PySide6.QtCore import QRect, Qt


from app.window import VIEW_NAMES, MainWindow


def test_title_and_views(window):
    assert window.windowTitle() == "Nibble"
    assert [window.sidebar.item(i).text() for i in range(window.sidebar.count())] == [
        "Quantize", "Chat", "Compare", "Analysis", "Library"]
    assert window.stack.count() == 5
    assert (window.width(), window.height()) == (1280, 720)  # first start


def test_keyboard_shortcuts_switch_views(qtbot, window):
    window.activateWindow()
    for i, name in enumerate(VIEW_NAMES):
        qtbot.keyClick(window, Qt.Key(Qt.Key.Key_1 + i), Qt.KeyboardModifier.ControlModifier)
        assert window.current_view_name() == name
        assert window.stack.currentWidget() is window.views[name]


def test_geometry_and_last_view_are_remembered(qtbot, state):
    first = MainWindow(state)
    qtbot.addWidget(first)
    first.show()
    first.setGeometry(QRect(10, 20, 1010, 700))
    first.show_view("Analysis")
    first.close()
    second = MainWindow(state)
    qtbot.addWidget(second)
    second.show()
    assert (second.width(), second.height()) == (1010, 700)
    assert second.current_view_name() == "Analysis"


def test_fits_1280x720(qtbot, window):
    window.resize(1280, 720)
    for name in VIEW_NAMES:
        window.show_view(name)
        qtbot.wait(10)
        hint = window.stack.currentWidget().minimumSizeHint()
        assert hint.width() <= 1280 - window.sidebar.width() and hint.height() <= 720 - 60, name


def test_about_lists_versions(window):
    dlg = window.show_about()
    assert dlg.windowTitle() == "About Nibble"
    import engine

    assert dlg.versions["Nibble"] == engine.__version__
    for key in ("llama.cpp (llama-cpp-python)", "PyTorch", "Qt", "Backends"):
        assert dlg.versions[key]
    dlg.close()


def test_gui_help_starts_without_a_window():
    out = subprocess.run([sys.executable, "-m", "app.launcher", "gui", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "desktop app" in out.stdout


def test_first_run_offers_the_demo_model(window):
    from PySide6.QtWidgets import QPushButton, QTabWidget

    buttons = [b for b in window.views["Quantize"].findChildren(QPushButton) if b.text() == "Try with the demo model"]
    assert buttons and buttons[0].isEnabled()
    tabs = buttons[0].parent()
    while not isinstance(tabs, QTabWidget):
        tabs = tabs.parent()
    assert tabs.currentWidget() is buttons[0].parent(), "with no recent models, the demo tab is shown first"
