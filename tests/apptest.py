"""Fixtures shared by the app tests: a QApplication with Nibble's names and settings kept in tmp_path."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings


@pytest.fixture
def settings(tmp_path, qapp, monkeypatch):
    from app.main import create_app

    monkeypatch.setenv("NIBBLE_HOME", str(tmp_path / "nibble-home"))  # the engine's library lives here

    create_app()
    s = QSettings(str(tmp_path / "nibble.ini"), QSettings.Format.IniFormat)
    yield s
    s.sync()


@pytest.fixture
def state(settings):
    from app.state import AppState

    return AppState(settings)


@pytest.fixture
def window(qtbot, state):
    from app.window import MainWindow

    win = MainWindow(state)
    qtbot.addWidget(win)
    win.show()
    yield win
    for v in win.views.values():
        if hasattr(v, "shutdown"):
            v.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama chat model (hidden 256, 2 layers) with a real tokenizer and chat template."""
    from tinymodels import make_model

    return make_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama3")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model, tmp_path_factory):
    """The tiny model quantized to Q8_0 by the engine."""
    from engine.gguf.quantize import quantize

    out = tmp_path_factory.mktemp("gguf") / "tiny-Q8_0.gguf"
    quantize(tiny_model, "Q8_0", out)
    return out


@pytest.fixture(scope="session")
def tiny_q2(tiny_model, tmp_path_factory):
    """The tiny model at Q2_K: damaged enough that a greedy answer parts from the original's."""
    from engine.gguf.quantize import quantize

    out = tmp_path_factory.mktemp("gguf") / "tiny-Q2_K.gguf"
    quantize(tiny_model, "Q2_K", out)
    return out
