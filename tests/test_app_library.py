"""Library: what the app and the `nibble` command made, in one list; the context menu; Forget and Delete; the
file manager; publishing to the stand-in Hub and handing a GGUF to Ollama or LM Studio, from the Library and
from the Quantize wizard's last page.

What the view shows is checked against the library file the engine wrote and against the files on disk; the
upload against what the stand-in Hub received."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox

from app.state import ModelEntry
from engine.commands.cli import main as cli

MENU = ["Open in Chat", "Compare with original", "Analyse", "Quantize…", "Show in file manager", "Copy path",
        "Publish…", "Use in Ollama", "Use in LM Studio", "Forget", "Delete…"]


def _entry(item) -> ModelEntry:
    return item.data(0, Qt.ItemDataRole.UserRole)


def _item(view, path):
    assert view.select_path(str(path)), f"{path} is not listed"
    return view.tree.currentItem()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def made(tiny_model, tmp_path):
    """A GGUF made from the tiny model with the `nibble` command, in a folder of its own."""
    out = tmp_path / "outputs" / "tiny-Q2_K.gguf"
    out.parent.mkdir()
    assert cli(["quantize", str(tiny_model), "--type", "Q2_K", "--out", str(out)]) == 0
    return out


def test_cli_outputs_are_listed_with_type_and_original(qtbot, window, tiny_model, state, tmp_path):
    from engine.models import library

    window.show_view("Library")
    view = window.views["Library"]
    made = tmp_path / "tiny-Q2_K.gguf"
    assert not view.select_path(str(made))
    assert cli(["quantize", str(tiny_model), "--type", "Q2_K", "--out", str(made)]) == 0
    # it appears while the view is open, with no refresh: the view follows the library file the command wrote
    qtbot.waitUntil(lambda: view.select_path(str(made)), timeout=10000)
    entries = {e.path: e for e in library.list_entries()}
    rec = entries[str(made.resolve())]
    assert rec.type == "Q2_K" and entries_by_id(entries)[rec.source].path == str(tiny_model.resolve())
    item = _item(view, made)
    assert (item.text(1), item.text(2)) == ("gguf", "Q2_K")
    assert item.parent() is not None and _entry(item.parent()).path == str(tiny_model.resolve())
    # opened elsewhere first (a recent entry that knows neither), it still shows its type under its original
    state.add_model(ModelEntry(str(made), "gguf"))
    item = _item(view, made)
    assert item.text(2) == "Q2_K" and _entry(item.parent()).path == str(tiny_model.resolve())


def entries_by_id(entries: dict) -> dict:
    return {e.id: e for e in entries.values()}


def test_context_menu_offers_every_action(qtbot, window, tiny_model, made):
    view = window.views["Library"]
    view.refresh()
    for path, enabled in ((made, set(MENU) - {"Quantize…"}),
                          (tiny_model, {"Open in Chat", "Quantize…", "Show in file manager", "Copy path", "Forget"})):
        menu = view.menu_for(_entry(_item(view, path)))
        acts = [a for a in menu.actions() if not a.isSeparator()]
        assert [a.text() for a in acts] == MENU
        assert {a.text() for a in acts if a.isEnabled()} == enabled
    # Copy path puts the path on the clipboard
    _item(view, made)
    next(a for a in view.menu_for(view.selected()).actions() if a.text() == "Copy path").trigger()
    assert QGuiApplication.clipboard().text() == str(made.resolve())


def test_forget_keeps_files_and_delete_asks_and_removes_only_outputs(qtbot, window, tiny_model, made, monkeypatch,
                                                                   tmp_path):
    from engine.models import library

    view = window.views["Library"]
    view.refresh()
    model_files = sorted(p.name for p in tiny_model.iterdir())
    asked = []

    def answer(reply):
        def question(*args, **kw):
            asked.append(args[2])
            return reply
        return question

    # an original is never deleted: refused in one line, before any question
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert not view.delete(_entry(_item(view, tiny_model)))
    assert not asked and "not an output Nibble made" in view.banner.label.text()
    assert sorted(p.name for p in tiny_model.iterdir()) == model_files
    # a GGUF Nibble did not make (no original recorded) is not Nibble's to delete
    stranger = tmp_path / "downloaded.gguf"
    shutil.copyfile(made, stranger)
    view.state.add_model(ModelEntry(str(stranger), "gguf"))
    assert not view.delete(_entry(_item(view, stranger))) and stranger.exists() and not asked
    # an original whose output is listed is not forgotten (the output would lose its original)
    _item(view, tiny_model)
    view.forget_btn.click()
    assert "forget or delete those first" in view.banner.label.text() and view.select_path(str(tiny_model))
    assert library.default().find_path(tiny_model) is not None
    # Forget: the entry goes, the file stays
    _item(view, stranger)
    view.forget_btn.click()
    assert not view.select_path(str(stranger)) and stranger.exists()
    assert library.default().find_path(stranger) is None
    # Delete asks; Cancel keeps everything
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Cancel))
    assert not view.delete(_entry(_item(view, made)))
    assert asked and str(made.resolve()) in asked[-1] and made.exists()
    # Yes removes the file and its entry; the original and its files stay
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert view.delete(_entry(_item(view, made)))
    assert not made.exists() and library.default().find_path(made) is None
    assert not view.select_path(str(made)) and view.select_path(str(tiny_model))
    assert sorted(p.name for p in tiny_model.iterdir()) == model_files
    assert "Deleted" in view.banner.label.text()


def test_show_in_file_manager_without_a_launcher_says_so(qtbot, window, made, monkeypatch, tmp_path):
    empty = tmp_path / "no-programs"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no xdg-open, no file manager
    view = window.views["Library"]
    view.refresh()
    _item(view, made)
    QGuiApplication.clipboard().setText("")
    view.show_btn.click()
    assert QGuiApplication.clipboard().text() == str(made.resolve())
    assert not view.banner.isHidden() and "No file manager" in view.banner.label.text()


# -- publishing and the hand-offs ---------------------------------------------------------------------------


@pytest.fixture
def hub(hub_server, monkeypatch, tmp_path):
    """The stand-in Hub, with alice's write token saved the way `nibble login` saves it (not in HF_TOKEN)."""
    import huggingface_hub.constants as c
    from hubwrite import write_token

    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks the LFS protocol
    write_token(hub_server, "hf_alice_write", "alice", orgs=("team",))
    (tmp_path / "hf_home" / "token").write_text("hf_alice_write")
    return hub_server


def _publish(qtbot, view, path, repo: str):
    _item(view, path)
    view.publish_btn.click()
    dlg = view.actions.dialog
    dlg.repo.setText(repo)
    dlg.publish_btn.click()
    qtbot.waitUntil(lambda: dlg.job is None, timeout=60000)
    return dlg


def test_publish_sends_the_file_and_a_card(qtbot, window, hub, made):
    view = window.views["Library"]
    view.refresh()
    before = _sha(made)
    dlg = _publish(qtbot, view, made, "alice/tiny-gguf")
    assert dlg.result is not None, dlg.banner.label.text()
    repo = hub.repos["alice/tiny-gguf"]
    assert sorted(repo.files) == ["README.md", made.name]
    assert repo.files[made.name] == made.read_bytes() and _sha(made) == before
    card = repo.files["README.md"].decode()
    assert "quantized_by: Nibble" in card and "Q2_K" in card and not repo.private
    assert "alice/tiny-gguf" in dlg.banner.label.text()
    shown = dlg.banner.label.text() + view.banner.label.text()
    assert "hf_alice_write" not in shown  # the token is never shown
    dlg.close()


@pytest.mark.parametrize("repo,token,expect", [
    ("bob/theirs", "hf_alice_write", "belongs to 'bob'"),  # someone else's repository
    ("alice/x", "hf_alice_read", "read-only"),  # a token that cannot write
    ("alice/x", "hf_wrong", "status 401"),  # a token the Hub does not know
    ("not a repo", "hf_alice_write", "USER/NAME"),
])
def test_publish_refusals_are_one_line_and_send_nothing(qtbot, window, hub, made, tmp_path, repo, token, expect):
    hub.add_token("hf_alice_read", "alice")
    (tmp_path / "hf_home" / "token").write_text(token)
    view = window.views["Library"]
    view.refresh()
    before = _sha(made)
    dlg = _publish(qtbot, view, made, repo)
    text = dlg.banner.label.text()
    assert dlg.result is None and expect in text and "\n" not in text and token not in text
    assert not [r for r in hub.requests if r["method"] in ("POST", "PUT")]
    assert _sha(made) == before and sorted(p.name for p in made.parent.iterdir()) == [made.name]
    dlg.close()


def test_publish_without_the_network_says_so(qtbot, window, hub, made):
    view = window.views["Library"]
    view.refresh()
    hub.close()
    dlg = _publish(qtbot, view, made, "alice/x")
    assert dlg.result is None and "cannot reach" in dlg.banner.label.text()
    assert sorted(p.name for p in made.parent.iterdir()) == [made.name]
    dlg.close()


def test_done_page_hands_the_gguf_to_ollama_and_lm_studio(qtbot, state, tiny_model, made, monkeypatch, tmp_path):
    from app.services import QuantizeOutcome
    from app.views.quantize.done_page import DonePage

    empty = tmp_path / "no-programs"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # Ollama is not installed here
    monkeypatch.setenv("LMSTUDIO_MODELS_DIR", str(tmp_path / "lmstudio"))
    page = DonePage(state)
    qtbot.addWidget(page)
    page.show_result(ModelEntry(str(tiny_model), "original"), ModelEntry(str(made), "gguf", qtype="Q2_K"),
                     QuantizeOutcome(str(made), "Q2_K", made.stat().st_size, 1.0, 1.0))
    assert page.publish_btn.isEnabled() and page.ollama_btn.isEnabled() and page.lmstudio_btn.isEnabled()
    before = _sha(made)
    with qtbot.waitSignal(page.actions.said, timeout=30000) as said:
        page.ollama_btn.click()
    modelfile = made.with_name(f"{made.stem}.Modelfile")
    assert modelfile.read_text().startswith(f"FROM {made.resolve()}")
    assert "Ollama is not installed" in said.args[0] and f"ollama create tiny-q2_k -f {modelfile}" in said.args[0]
    assert page.banner.label.text() == said.args[0]
    with qtbot.waitSignal(page.actions.said, timeout=30000) as said:
        page.lmstudio_btn.click()
    placed = tmp_path / "lmstudio" / "nibble" / "tiny" / made.name
    assert placed.read_bytes() == made.read_bytes() and "LM Studio" in said.args[0]
    assert _sha(made) == before
