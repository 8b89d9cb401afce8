"""Pre-tokenizer handling proven on real vocabularies (Llama-3, Qwen2, Llama-2).

llama-cpp-python's source archive carries llama.cpp's vocab-only GGUFs of real tokenizers, with test
strings (.inp) and the ids llama.cpp expects (.out). The archive is fetched from PyPI into a cache once.
transformers rebuilds a tokenizer.json from each; Nibble converts a model folder holding it; llama.cpp
must then produce the expected ids, and the same ids as the tokenizer.json itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_source import VOCABS, cases as _cases, vendor_models as _vendor_models


def _model_with_tokenizer(tmp_path: Path, models: Path, vocab: str, pre: str) -> Path:
    import torch
    import transformers
    from transformers import AutoTokenizer

    folder = tmp_path / vocab
    tok = AutoTokenizer.from_pretrained(models, gguf_file=f"{vocab}.gguf")
    tok.save_pretrained(folder)
    if pre == "llama-bpe":  # Meta's tokenizer.json matches whole words before merging, as llama.cpp does
        tj = json.loads((folder / "tokenizer.json").read_text())
        tj["model"]["ignore_merges"] = True
        (folder / "tokenizer.json").write_text(json.dumps(tj))
    n_vocab = len(tok)
    arch = "qwen2" if pre == "qwen2" else "llama"
    cfg = transformers.AutoConfig.for_model(
        arch, vocab_size=n_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
        architectures=["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
    )
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2"])
def test_real_bpe_vocabularies(pre, tmp_path):
    import gguf
    import llama_cpp
    from tokenizers import Tokenizer

    from engine.gguf.convert import convert_to_gguf

    models = _vendor_models()
    vocab = VOCABS[pre]
    folder = _model_with_tokenizer(tmp_path, models, vocab, pre)
    out = convert_to_gguf(folder, tmp_path / "m.gguf")
    assert gguf.GGUFReader(out).get_field("tokenizer.ggml.pre").contents() == pre
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    cases = _cases(models, vocab)
    assert len(cases) > 20
    for text, expected in cases:
        ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert ours == expected, repr(text)
        assert hf.encode(text, add_special_tokens=False).ids == expected, repr(text)


def test_real_sentencepiece_vocabulary(tmp_path):
    """Llama-2's SentencePiece vocabulary: llama.cpp's expected ids, written from the .gguf vocabulary."""
    import llama_cpp

    from engine.gguf.convert import convert_to_gguf

    models = _vendor_models()
    folder = _model_with_tokenizer(tmp_path, models, VOCABS["llama-spm"], "llama-spm")
    # transformers' rebuilt fast tokenizer stands in for tokenizer.model here
    out = convert_to_gguf(folder, tmp_path / "spm.gguf")
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    for text, expected in _cases(models, VOCABS["llama-spm"]):
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == expected, repr(text)
