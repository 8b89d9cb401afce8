"""The lean GGUF header read (engine.models.gguf_header) against gguf-py's full reader on real files."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from engine.core.errors import NibbleError
from engine.models.gguf_header import read_gguf_header


def _reference(path):
    """What gguf-py's GGUFReader says of the same file: scalars, array lengths, tensor data end."""
    reader = gguf.GGUFReader(path)
    scalars, arrays = {}, {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):  # the reader's own entries for the header's counts
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            arrays[key] = len(f.data)
        else:
            scalars[key] = f.contents()
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    return scalars, arrays, len(reader.tensors), end


@pytest.mark.parametrize("which", ["tiny_chat_gguf", "tiny_gguf_q4"])
def test_header_facts_equal_gguf_py(which, request):
    path = request.getfixturevalue(which)
    scalars, arrays, n_tensors, end = _reference(path)
    header = read_gguf_header(path)
    assert header.array_lengths == arrays and arrays["tokenizer.ggml.tokens"] > 0
    assert header.fields.keys() == scalars.keys()
    for key, value in scalars.items():
        if isinstance(value, float):
            assert header.fields[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert header.fields[key] == value, key
    assert header.tensor_count == n_tensors
    assert header.data_end == end == path.stat().st_size  # llama.cpp's writer ends the file at the last tensor


def test_big_endian_and_padded_file(tmp_path):
    """A big-endian GGUF with a non-default alignment, written by gguf-py's writer."""
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_custom_alignment(64)
    w.add_context_length(77)
    w.add_token_list(["a", "bb", "ccc"])
    w.add_array("some.floats", [1.5, 2.5])
    w.add_tensor("t0", np.zeros((3, 5), dtype=np.float32))
    w.add_tensor("t1", np.zeros(7, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    scalars, arrays, n_tensors, end = _reference(path)
    header = read_gguf_header(path)
    assert header.get("llama.context_length") == 77 == scalars["llama.context_length"]
    assert header.array_lengths == arrays == {"tokenizer.ggml.tokens": 3, "some.floats": 2}
    assert header.tensor_count == n_tensors == 2
    assert header.data_end == end


def test_cut_and_foreign_files_are_refused_in_one_line(tiny_chat_gguf, tmp_path):
    data = tiny_chat_gguf.read_bytes()
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:200])  # inside the vocabulary
    with pytest.raises(NibbleError, match=r"head\.gguf is truncated or corrupt"):
        read_gguf_header(head)
    body = tmp_path / "body.gguf"
    body.write_bytes(data[: len(data) * 2 // 3])  # the header is whole, the tensor data is not
    assert read_gguf_header(body).data_end == len(data) > body.stat().st_size
    notes = tmp_path / "notes.gguf"
    notes.write_text("these are not weights\n")
    with pytest.raises(NibbleError, match=r"notes\.gguf is not a GGUF file"):
        read_gguf_header(notes)


def test_chat_load_refuses_a_cut_file_and_caps_the_context(tiny_chat_gguf, tmp_path):
    from engine.runtime.gguf import check_gguf

    reader = gguf.GGUFReader(tiny_chat_gguf)
    arch = reader.get_field("general.architecture").contents()
    assert check_gguf(tiny_chat_gguf) == reader.get_field(f"{arch}.context_length").contents() > 0
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_chat_gguf.read_bytes()[:-1000])
    with pytest.raises(NibbleError, match=r"cut\.gguf is truncated: its tensors need"):
        check_gguf(cut)
