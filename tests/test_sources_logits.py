"""Every source layout a user downloads (float16, bfloat16 and float32 weights; tied or separate output
matrix; one file or shards) becomes a GGUF that llama.cpp runs to transformers' logits.

"It loaded and generated" proves little: a converter that wrote float16 weights as bfloat16 or swapped two
projections still produces a file that loads and talks. So each file is run by llama-cpp-python and its
logits are set against transformers' on the same token ids.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tinymodels import make_model

PROMPT = "The quick brown fox, it's 1234 apples! Hello world, and a few more words for the window."
# source dtype -> the ggml type its 2-D weights keep in the unquantized GGUF (nothing is lost on the way)
KEPT_AS = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
SAFETENSORS_DTYPE = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}

CASES = [  # dtype, tied output matrix, shards (at least)
    ("float16", True, 3),
    ("float32", False, 2),
    ("bfloat16", True, 2),
    ("bfloat16", False, 1),
]


def _stored_dtypes(folder) -> set[str]:
    """The dtypes written in the safetensors headers, read without any safetensors code."""
    found = set()
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        found |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return found


def _transformers_logits(folder, ids: list[int]) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)


def _llama_logits(path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


def _assert_same_model(ours: np.ndarray, ref: np.ndarray, rel: float) -> None:
    assert ours.shape == ref.shape
    scale = np.abs(ref).max()
    assert np.abs(ours - ref).max() < rel * scale
    # llama.cpp's top token is transformers' top token, or within the tolerance of it (a near tie)
    top = ours.argmax(-1)
    assert np.all(ref[np.arange(len(ref)), top] >= ref.max(-1) - 2 * rel * scale)


@pytest.mark.parametrize("dtype,tied,shards", CASES, ids=[f"{d}-{'tied' if t else 'untied'}-{s}shard"
                                                         for d, t, s in CASES])
def test_source_layout_runs_to_transformers_logits(tmp_path, dtype, tied, shards):
    import gguf
    from tokenizers import Tokenizer

    from engine.gguf.convert import convert_to_gguf
    from engine.gguf.quantize import quantize

    model = make_model(tmp_path / "model", "llama3", dtype=dtype, tied=tied, shards=shards)
    n_files = len(list(model.glob("*.safetensors")))
    assert n_files >= shards if shards > 1 else n_files == 1
    assert (model / "model.safetensors.index.json").is_file() is (shards > 1)
    assert _stored_dtypes(model) == {SAFETENSORS_DTYPE[dtype]}
    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(PROMPT).ids
    ref = _transformers_logits(model, ids)

    # the unquantized file keeps the source precision
    unquantized = convert_to_gguf(model, tmp_path / "unquantized.gguf")
    reader = gguf.GGUFReader(unquantized)
    matrices = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert len(matrices) == 2 * 7 + 1 + (not tied)  # 7 a layer, token embeddings, the output matrix if separate
    assert set(matrices.values()) == {KEPT_AS[dtype]}, matrices
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) is (not tied)
    # bfloat16 and float16 weights make llama.cpp round its activations to 16 bits too: a looser bound
    _assert_same_model(_llama_logits(unquantized, ids), ref, rel=0.005 if dtype == "float32" else 0.02)

    # through the quantizer to F32: the same model with every weight exact
    f32 = quantize(model, "F32", tmp_path / "f32.gguf").output
    _assert_same_model(_llama_logits(f32, ids), ref, rel=0.005)
