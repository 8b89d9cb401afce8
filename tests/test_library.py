"""Nibble's library of originals and outputs: a JSON file the app reopens."""

from __future__ import annotations

import json

import pytest

from engine.models import library
from engine.core.errors import NibbleError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NIBBLE_HOME", str(tmp_path / "nibble"))
    return tmp_path


def _model(tmp_path, name="qwen-mini"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    return folder


def test_outputs_are_recorded_with_their_source_and_reopened(home):
    original = _model(home)
    gguf = home / "qwen-mini-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 996)

    out = library.record_output(gguf, kind="gguf", source_path=original, type="Q4_K_M", source_hub_id="acme/qwen-mini")
    assert out.figures == {"file_size": 1000} and out.type == "Q4_K_M"
    library.update_figures(out.id, {"kld": 0.0123, "ppl": 9.87})
    library.update_figures(out.id, {"ppl": 9.5, "kld": None})

    # a fresh reader (the app after a restart) sees the same library
    entries = library.Library().list_entries()
    assert library.library_path() == home / "nibble" / "library.json"
    orig = next(e for e in entries if e.kind == "original")
    made = next(e for e in entries if e.kind == "gguf")
    assert (orig.path, orig.hub_id, orig.name) == (str(original.resolve()), "acme/qwen-mini", "acme/qwen-mini")
    assert made.source == orig.id and made.figures == {"file_size": 1000, "ppl": 9.5}
    assert made.created.endswith("+00:00") and not made.missing
    assert [e.id for e in library.Library().outputs_of(orig.id)] == [made.id]

    # recording the same output again updates it instead of listing it twice
    library.record_output(gguf, kind="gguf", source_path=original, type="Q4_K_M", figures={"kld": 0.02})
    assert len(library.list_entries()) == 2
    assert library.list_entries("gguf")[0].figures == {"file_size": 1000, "ppl": 9.5, "kld": 0.02}


def test_missing_files_are_shown_and_removing_keeps_files(home):
    original = _model(home)
    gone = home / "old.gguf"
    gone.write_bytes(b"GGUF")
    entry = library.add_entry(gone, "gguf", type="Q8_0")
    keep = library.add_entry(original, "original")
    gone.unlink()
    listed = {e.id: e.missing for e in library.list_entries()}
    assert listed == {entry.id: True, keep.id: False}

    library.remove_entry(keep.id)
    assert original.exists() and (original / "model.safetensors").exists()
    assert [e.id for e in library.list_entries()] == [entry.id]
    with pytest.raises(NibbleError, match="no library entry 'nope'"):
        library.remove_entry("nope")
    with pytest.raises(NibbleError, match="unknown library kind"):
        library.add_entry(original, "onnx")


def test_write_is_atomic(home, monkeypatch):
    original = _model(home)
    library.add_entry(original, "original", figures={"file_size": 1})
    path = library.library_path()
    before = path.read_bytes()

    def broken_dump(obj, f, **kw):
        f.write('{"version": 1, "entr')  # half a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(library.json, "dump", broken_dump)
    with pytest.raises(OSError):
        library.add_entry(home / "other.gguf", "gguf")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["library.json", "library.json.lock"]


def test_damaged_library_file_is_named_not_overwritten(home):
    path = library.library_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(NibbleError, match=r"library file .*library\.json is damaged"):
        library.list_entries()
    assert path.read_text() == "{not json"
    path.write_text(json.dumps({"version": 1, "entries": []}))
    assert library.list_entries() == []
