"""The main window: title, the five views, shortcuts, remembered geometry and view, About."""

from __future__ import annotations

import subprocess
import sys

import pytest

from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QWidget

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
    first.setGeometry(QRect(10, 20, 800, 650))  # the offscreen screen is 800×800
    first.show_view("Analysis")
    first.close()
    second = MainWindow(state)
    qtbot.addWidget(second)
    second.show()
    assert (second.width(), second.height()) == (800, 650)
    assert second.current_view_name() == "Analysis"


@pytest.mark.parametrize("size", [(1280, 720), (900, 600)])  # the usual first size and the minimum
def test_every_view_fits(qtbot, window, size):
    window.resize(*size)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == size)
    for name in VIEW_NAMES:
        window.show_view(name)
        qtbot.wait(10)
        hint = window.stack.currentWidget().minimumSizeHint()
        assert hint.width() <= window.stack.width() and hint.height() <= window.stack.height(), (name, hint)


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


# -- layout at the smallest and a large window ---------------------------------------------------------------


def _clipped(root):
    """Visible labels and buttons of ``root`` whose text does not fit the space they were given."""
    from PySide6.QtWidgets import (
        QAbstractButton,
        QComboBox,
        QLabel,
        QProgressBar,
        QSpinBox,
        QTabBar,
    )

    out = []
    for w in root.findChildren(QWidget):
        if not w.isVisibleTo(root) or w.width() == 0:
            continue
        if isinstance(w, QLabel) and w.text():
            if w.wordWrap():
                if w.heightForWidth(w.contentsRect().width()) > w.contentsRect().height() + 1:
                    out.append(("label (wrapped)", w.text()[:50]))
            elif w.sizeHint().width() > w.width() or w.sizeHint().height() > w.height():
                out.append(("label", w.text()[:50]))
        elif isinstance(w, (QAbstractButton, QTabBar)) and w.sizeHint().width() > w.width():
            out.append((type(w).__name__, getattr(w, "text", lambda: "")()))
        elif isinstance(w, (QComboBox, QSpinBox, QProgressBar)) and w.minimumSizeHint().width() > w.width():
            out.append((type(w).__name__, w.objectName()))
    return out


def test_chat_fits_900x600(qtbot, window, tiny_chat_gguf):
    from app.state import ModelEntry

    window.resize(900, 600)
    window.show_view("Chat")
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (900, 600))  # the minimum lets it be this small
    chat = window.views["Chat"]
    chat.picker.set_model(ModelEntry(str(tiny_chat_gguf), "gguf"))
    chat.max_tokens.setValue(8)
    chat.input.setPlainText("Hello there")
    with qtbot.waitSignal(chat.reply_finished, timeout=120000):
        chat.send()
    qtbot.waitUntil(lambda: not chat.is_busy(), timeout=60000)
    for tab in range(chat.side.count()):
        chat.side.setCurrentIndex(tab)
        qtbot.wait(20)
        assert _clipped(window) == [], chat.side.tabText(tab)
    assert "tokens/s" in chat.stats.text() and chat.stats.isVisible()
    assert window.minimumSizeHint().width() <= 900 and window.minimumSizeHint().height() <= 600
    for name in VIEW_NAMES:  # the other views, as they first open
        window.show_view(name)
        qtbot.wait(20)
        assert _clipped(window) == [], name


def test_reading_column_is_bounded_at_1920x1080(qtbot, window):
    chat = window.views["Chat"]
    window.show_view("Chat")
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.width() == 1920)
    chat.conversation.history[:] = [{"role": "user", "content": "word " * 400},
                                    {"role": "assistant", "content": "another " * 300}]
    chat._render()
    qtbot.wait(20)
    t = chat.transcript
    limit = t.reading_width()
    assert t.viewport().width() > limit + 200  # the view is much wider than a reading line...
    doc = t.document()
    block = doc.begin()
    while block.isValid():
        assert doc.documentLayout().blockBoundingRect(block).width() <= limit + 1  # ...the lines are not
        block = block.next()
    assert chat.input.width() <= limit + 40 and chat.input.width() >= limit - 40
    # centred under the conversation's column
    centre = chat.input.mapTo(window, chat.input.rect().center()).x()
    column = t.viewport().mapTo(window, t.viewport().rect().center()).x()
    assert abs(centre - column) < 40


def test_splitters_remember_their_sizes(qtbot, state):
    first = MainWindow(state)
    qtbot.addWidget(first)
    first.show()
    first.resize(800, 700)  # the offscreen screen is 800×800: the window comes back at the same size
    first.show_view("Chat")
    split = first.views["Chat"].splitter
    qtbot.waitUntil(lambda: sum(split.sizes()) > 600)
    total = sum(split.sizes())
    split.setSizes([total - 300, 300])
    kept = split.sizes()
    first.close()
    second = MainWindow(state)
    qtbot.addWidget(second)
    second.show()
    qtbot.waitExposed(second)
    qtbot.waitUntil(lambda: second.views["Chat"].splitter.sizes() == kept)


def test_keyboard_reaches_the_chat(qtbot, window):
    chat = window.views["Chat"]
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: chat.input.hasFocus())  # Ctrl+2 lands in the message box
    chat.input.setPlainText("draft")
    qtbot.keyClick(chat.input, Qt.Key.Key_Tab)  # Tab leaves the box for Send, not a tab character
    assert chat.input.toPlainText() == "draft" and chat.send_btn.hasFocus()

    from app.views.chat.panels import ChatInput

    box = ChatInput()  # Ctrl+Enter sends too, as it did before Enter alone did
    qtbot.addWidget(box)
    with qtbot.waitSignal(box.submitted, timeout=5000):
        qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert box.toPlainText() == ""


# -- light and dark ----------------------------------------------------------------------------------------


def _pairs(scheme):
    return [("text", "base"), ("window_text", "window"), ("button_text", "button"),
            ("highlighted_text", "highlight"), ("link", "base"), ("placeholder", "base"),
            ("tooltip_text", "tooltip_base"), ("muted", "base"), ("text", "code_background"),
            ("link", "code_background"), ("error", "base"), ("warn", "window"),
            ("fits", "base"), ("tight", "base"), ("no", "base")]


def test_every_text_colour_reads_on_its_background():
    """WCAG contrast, computed here from the sRGB values: at least 4.5:1 for every text on its background."""
    from app.palette import DARK, LIGHT

    def lum(hexcode):
        r, g, b = (int(hexcode[-6:][i:i + 2], 16) / 255 for i in (0, 2, 4))
        f = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2]

    for scheme in (LIGHT, DARK):
        for fg, bg in _pairs(scheme):
            a, b = sorted((lum(getattr(scheme, fg)), lum(getattr(scheme, bg))), reverse=True)
            assert (a + 0.05) / (b + 0.05) >= 4.5, (scheme.dark, fg, bg)


def test_dark_appearance(qtbot, window, state):
    from PySide6.QtGui import QPalette

    from app.palette import contrast
    from app.settings import APPEARANCE

    chat = window.views["Chat"]
    window.show_view("Chat")
    chat.conversation.history[:] = [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "```\ncode\n```"}]
    chat._render()
    window.apply_appearance("light")
    light_window = window.palette().color(QPalette.ColorRole.Window)
    light_base = chat.transcript.palette().color(QPalette.ColorRole.Base)
    window.appearance_actions["dark"].trigger()  # View > Appearance > Dark
    qtbot.waitUntil(lambda: chat.transcript.palette().color(QPalette.ColorRole.Base) != light_base)
    pal, tpal = window.palette(), chat.transcript.palette()
    assert pal.color(QPalette.ColorRole.Window).lightness() < 100 < light_window.lightness()
    assert tpal.color(QPalette.ColorRole.Base).lightness() < 100 < light_base.lightness()
    for fg, bg, p in ((QPalette.ColorRole.WindowText, QPalette.ColorRole.Window, pal),
                      (QPalette.ColorRole.Text, QPalette.ColorRole.Base, tpal),
                      (QPalette.ColorRole.ButtonText, QPalette.ColorRole.Button, pal)):
        assert contrast(p.color(fg), p.color(bg)) >= 4.5
    # what the transcript draws itself: the code block's background under the text
    code = chat.transcript.document().find("code")
    assert code.block().blockFormat().background().color().lightness() < 100
    assert contrast(code.block().blockFormat().background().color(), tpal.color(QPalette.ColorRole.Text)) >= 4.5
    # charts follow
    plot = window.views["Analysis"].weights_plot
    assert plot.backgroundBrush().color() == pal.color(QPalette.ColorRole.Base)
    # remembered
    assert state.get(APPEARANCE) == "dark"
    window.close()
    again = MainWindow(state)
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.palette().color(QPalette.ColorRole.Window).lightness() < 100)
    assert again.appearance_actions["dark"].isChecked()
    again.apply_appearance("system")


def test_system_scheme_is_followed(qtbot, window, monkeypatch):
    from PySide6.QtGui import QGuiApplication, QPalette

    from app import style

    window.apply_appearance("system")
    assert window.palette().color(QPalette.ColorRole.Window).lightness() > 128  # offscreen: a light platform
    monkeypatch.setattr(style, "system_scheme", lambda: Qt.ColorScheme.Dark)
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # the desktop went dark
    qtbot.waitUntil(lambda: window.palette().color(QPalette.ColorRole.Window).lightness() < 100)
    monkeypatch.setattr(style, "system_scheme", lambda: Qt.ColorScheme.Light)
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Light)
    qtbot.waitUntil(lambda: window.palette().color(QPalette.ColorRole.Window).lightness() > 128)


def test_no_colour_is_named_outside_the_palette():
    """Views and widgets take every colour from app/palette.py (through app.style)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "app"
    literal = re.compile(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b|QColor\(\s*\d|rgba?\(|Qt\.GlobalColor|"
                         r"Qt\.(red|green|blue|black|white|gray|yellow)\b|['\"](red|green|blue|black|white)['\"]")
    found = []
    for path in root.rglob("*.py"):
        if path.name == "palette.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line.split("  #")[0]):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert found == []
