"""Settings for the whole test run, and the fixtures test modules share (built once, read-only ones per session).

Test modules take these by name; they never import fixtures (an imported fixture is built again in each module).
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Nibble's library (outputs, figures) of the whole test run lives in a temporary folder, never the user's.
os.environ.setdefault("NIBBLE_HOME", __import__("tempfile").mkdtemp(prefix="nibble-test-home-"))

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# -- the app: a QApplication with Nibble's names, settings kept in tmp_path ------------------------------


@pytest.fixture(autouse=True)
def _qt_garbage_on_the_main_thread(request):
    """After a test with widgets, collect its garbage here, on the main thread. Left to Python's automatic
    collection, a cycle holding a closed test's widget can be collected in a worker thread of the next test,
    where deleting the QObject waits for the main thread while the main thread waits for that worker."""
    yield
    if "qtbot" in request.fixturenames:
        import gc

        gc.collect()


@pytest.fixture
def settings(tmp_path, qapp, monkeypatch):
    from PySide6.QtCore import QSettings

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
        v.shutdown()


# -- a tiny chat model (Llama 3 template, real tokenizer) and GGUFs of it, for the app tests ----------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama chat model (hidden 256, 2 layers) with a real tokenizer and chat template."""
    from tinymodels import make_model

    return make_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama3")


@pytest.fixture(scope="session")
def tiny_chat_gguf(tiny_model, tmp_path_factory):
    """The tiny chat model quantized to Q8_0 by the engine."""
    from engine.gguf.quantize import quantize

    out = tmp_path_factory.mktemp("gguf") / "tiny-Q8_0.gguf"
    quantize(tiny_model, "Q8_0", out)
    return out


@pytest.fixture(scope="session")
def tiny_q2(tiny_model, tmp_path_factory):
    """The tiny chat model at Q2_K: damaged enough that a greedy answer parts from the original's."""
    from engine.gguf.quantize import quantize

    out = tmp_path_factory.mktemp("gguf") / "tiny-Q2_K.gguf"
    quantize(tiny_model, "Q2_K", out)
    return out


# -- a float32 tiny Llama and its GGUFs, for the evaluate / chat / compare / stats engine tests -----------


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> pathlib.Path:
    from eval_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama_dir, tmp_path_factory) -> pathlib.Path:
    """The float32 tiny Llama converted to an F32 GGUF."""
    from eval_models import convert

    return convert(tiny_llama_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny-f32.gguf")


@pytest.fixture(scope="session")
def tiny_gguf_q4(tiny_gguf, tmp_path_factory) -> pathlib.Path:
    from eval_models import quantize_gguf

    return quantize_gguf(tiny_gguf, "Q4_0", tmp_path_factory.mktemp("tiny-q4") / "tiny-q4_0.gguf")


# -- the stand-in Hugging Face Hub --------------------------------------------------------------------------


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A running :class:`StandInHub` that ``huggingface_hub`` (and Nibble) talk to, with a fresh HF_HOME."""
    import huggingface_hub.constants as c
    import huggingface_hub.hf_api as hf_api

    from hubserver import StandInHub

    hub = StandInHub()
    home = tmp_path / "hf_home"
    home.mkdir()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NIBBLE_HOME", str(tmp_path / "nibble_home"))
    monkeypatch.setattr(c, "ENDPOINT", hub.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HOME", str(home))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(c, "HF_ASSETS_CACHE", str(home / "assets"))
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(c, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
    hub.home = home
    hub.cache = home / "hub"
    yield hub
    hub.close()
