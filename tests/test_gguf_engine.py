"""GGUF conversion and quantization, checked the way a user would: llama.cpp loads the file, gives the
same token ids as the model's own tokenizer, and the same logits as transformers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clitools import ctrl_c_reaches_it, one_error_line
from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from tinymodels import make_model

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ["llama3", "llama2", "mistral", "qwen2", "qwen3"]

STRINGS = [
    "Hello world",
    " leading space and trailing ",
    "Whitespace   runs\t\ttabs\n\n\nand newlines  ",
    "Digits 1234567890 and 3.14159, 42nd",
    "Ünïcödé façade — “quotes” 🙂 日本語 中文 한국어",
    "It's, I'm, we'll, they've: contractions",
    "code: def f(x):\n    return x ** 2",
]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {fam: make_model(base / fam, fam) for fam in FAMILIES}


@pytest.fixture(scope="session")
def f32_ggufs(models, tmp_path_factory):
    from engine.gguf.quantize import quantize

    out = tmp_path_factory.mktemp("f32")
    return {fam: quantize(path, "F32", out / f"{fam}.gguf").output for fam, path in models.items()}


def _llama(path, **kw):
    import llama_cpp

    return llama_cpp.Llama(str(path), verbose=False, n_ctx=256, **kw)


def _reference_ids(model_dir: Path, text: str) -> list[int]:
    """Token ids from the model's own tokenizer: sentencepiece itself, or tokenizer.json via tokenizers."""
    if (model_dir / "tokenizer.model").is_file():
        import sentencepiece as spm

        return [1] + spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model")).encode(text)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_gguf_matches_transformers(family, models, f32_ggufs):
    import torch
    import transformers

    llm = _llama(f32_ggufs[family], logits_all=True)
    ids = _reference_ids(models[family], "The quick brown fox, it's 1234 apples!")
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)])
    hf = transformers.AutoModelForCausalLM.from_pretrained(models[family], dtype=torch.float32)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 0.02 * np.abs(ref).max()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() > 0.95


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_tokenizes_like_the_model_tokenizer(family, models, f32_ggufs):
    llm = _llama(f32_ggufs[family], vocab_only=True)
    for text in STRINGS:
        ours = llm.tokenize(text.encode(), add_bos=family in ("llama3", "llama2", "mistral"), special=False)
        assert ours == _reference_ids(models[family], text), text


def test_special_tokens_and_chat_template_metadata(models, f32_ggufs):
    import gguf

    r = gguf.GGUFReader(f32_ggufs["llama3"])
    assert r.get_field("tokenizer.ggml.pre").contents() == "llama-bpe"
    assert r.get_field("tokenizer.ggml.model").contents() == "gpt2"
    tokens = r.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[r.get_field("tokenizer.ggml.bos_token_id").contents()] == "<|begin_of_text|>"
    assert tokens[r.get_field("tokenizer.ggml.eos_token_id").contents()] == "<|im_end|>"
    assert r.get_field("tokenizer.ggml.add_bos_token").contents() is True
    assert "<|im_start|>" in r.get_field("tokenizer.chat_template").contents()
    types = r.get_field("tokenizer.ggml.token_type").contents()
    assert types[tokens.index("<|im_start|>")] == gguf.TokenType.CONTROL
    q = gguf.GGUFReader(f32_ggufs["qwen2"])
    assert q.get_field("tokenizer.ggml.pre").contents() == "qwen2"
    llm = _llama(f32_ggufs["llama3"], vocab_only=True)
    ids = llm.tokenize(b"<|im_start|>user", add_bos=False, special=True)
    assert ids[0] == tokens.index("<|im_start|>")


def test_changed_vocabulary_still_converts(tmp_path):
    """A fine-tune with a different vocabulary is recognised by its pre-tokenizer pattern, not a hash."""
    from engine.gguf.quantize import quantize

    import torch
    import transformers

    model = make_model(tmp_path / "ft", "qwen2")
    tj = json.loads((model / "tokenizer.json").read_text())
    new_id = max(tj["model"]["vocab"].values()) + 1
    for t in tj["added_tokens"]:
        new_id = max(new_id, t["id"] + 1)
    tj["model"]["vocab"]["zzzz_new_token"] = new_id  # a vocabulary entry the base model never had
    (model / "tokenizer.json").write_text(json.dumps(tj))
    m = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    m.resize_token_embeddings(new_id + 1)
    m.save_pretrained(model)
    cfg = json.loads((model / "config.json").read_text())
    out = quantize(model, "Q8_0", tmp_path / "ft.gguf").output
    llm = _llama(out, vocab_only=True)
    assert llm.n_vocab() == cfg["vocab_size"]


def test_llama3_rope_scaling_writes_rope_freqs(tmp_path):
    from engine.models.inspect import inspect_model
    from engine.gguf.quantize import quantize

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 1024}
    model = make_model(tmp_path / "l31", "llama3", rope_scaling=scaling)
    out = quantize(model, "F32", tmp_path / "l31.gguf").output
    info = inspect_model(out)
    rope = [t for t in info.tensors if t.name == "rope_freqs.weight"]
    assert rope and rope[0].shape == [32]  # head_dim / 2
    import torch
    import transformers

    llm = _llama(out, logits_all=True)
    ids = _reference_ids(model, "Scaled rope, long context models.")
    llm.eval(ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(np.array(llm.scores[: len(ids)]) - ref).max() < 0.02 * np.abs(ref).max()


REPRESENTATIVE = ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS",
                  "IQ4_NL", "Q3_K_L", "Q3_K_S", "IQ3_S", "Q2_K", "IQ2_XXS", "IQ1_M", "TQ2_0"]


def test_type_list_comes_from_the_library():
    import llama_cpp

    from engine.gguf.quantize import find_type, quant_types

    names = {t.name for t in quant_types()}
    lib = {a.split("_", 3)[-1] for a in dir(llama_cpp) if a.startswith("LLAMA_FTYPE_MOSTLY_")}
    assert set(REPRESENTATIVE) <= names
    assert {n for n in lib if "MOE" not in n and "FP4" not in n and n != "Q4_1_SOME_F16"} <= names
    assert find_type("q4_k").name == "Q4_K_M"
    with pytest.raises(NibbleError, match="quant type .Q9_9. is unknown") as bad:
        find_type("Q9_9")
    assert bad.value.setting == "quant type"


def test_one_type_parser_for_quantizing_and_the_estimate():
    """The estimate and the quantizer read type names the same way, llama-quantize's aliases included."""
    from engine.commands.cli import error_line
    from engine.estimate.tensor_types import ft_name, parse_file_type
    from engine.gguf.quantize import find_type

    for spelling in ("q4_k", " Q4_K_M ", "q3_k", "Q5_K", "iq4_xs", "q8_0"):
        assert ft_name(parse_file_type(spelling)) == find_type(spelling).name
    with pytest.raises(NibbleError) as bad:
        parse_file_type("Q9_9")
    assert "--" not in str(bad.value)  # the engine names the setting in words; the CLI adds its option
    assert error_line(bad.value).startswith("--type: quant type 'Q9_9' is unknown")


def test_every_representative_type_loads_and_generates(models, tmp_path):
    from engine.gguf.imatrix import load_imatrix
    from engine.gguf.quantize import quantize

    imatrix = tmp_path / "imatrix.gguf"
    sizes = {}
    for i, qtype in enumerate(REPRESENTATIVE):
        kw = {}
        if qtype in ("IQ2_XXS", "IQ1_M"):
            if imatrix.exists():
                kw["imatrix"] = imatrix
            else:
                kw.update(calibration="default", imatrix_chunks=4, save_imatrix=imatrix)
        res = quantize(models["llama3"], qtype, tmp_path / f"{qtype}.gguf", threads=2, **kw)
        sizes[qtype] = res.file_bytes
        llm = _llama(res.output)
        out = llm("The", max_tokens=3, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1, qtype
        del llm
    assert sizes["Q8_0"] > sizes["Q6_K"] > sizes["Q4_K_M"] > sizes["Q2_K"] > sizes["IQ2_XXS"]
    assert load_imatrix(imatrix).sums, "the saved importance matrix is readable"


def test_needs_imatrix_types_refuse_without_one(models, tmp_path):
    from engine.gguf.quantize import quantize

    with pytest.raises(NibbleError, match="needs an importance matrix"):
        quantize(models["llama3"], "IQ2_XXS", tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


class _CancelAfter(Reporter):
    def __init__(self, n):
        self.n, self.seen = n, 0

    def progress(self, done, total, message="", **extra):
        self.seen += 1

    def is_cancelled(self):
        return self.seen >= self.n


@pytest.mark.parametrize("after", [3, 30])
def test_cancel_leaves_nothing_behind(models, tmp_path, after):
    """after=3 cancels during conversion, after=30 during llama.cpp's quantization."""
    from engine.gguf.quantize import quantize

    with pytest.raises(Cancelled):
        quantize(models["qwen2"], "Q4_K_M", tmp_path / "out.gguf", reporter=_CancelAfter(after))
    assert list(tmp_path.iterdir()) == []


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, **kw)


def test_cli_json_progress_and_ctrl_c(models, tmp_path):
    import gguf
    import psutil

    out = tmp_path / "q.gguf"
    r = _cli("quantize", str(models["qwen3"]), "--type", "Q5_K_M", "--out", str(out), "--json-progress")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    n_tensors = len(gguf.GGUFReader(out).tensors)
    # each stage counts every tensor once, from 1 to the number of tensors in the file it makes
    for stage in ("convert", "quantize"):
        seen = [(e["done"], e["total"]) for e in events if e.get("stage") == stage]
        assert seen == [(i, n_tensors) for i in range(1, n_tensors + 1)], stage
    quant = [e for e in events if e.get("stage") == "quantize"]
    assert all(" -> " in e["message"] for e in quant)
    assert events[-1]["event"] == "done" and events[-1]["file_bytes"] == out.stat().st_size

    # Ctrl-C while the importance matrix is being computed: exit 2, one line, nothing left behind.
    slow = tmp_path / "slow"
    slow.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "engine", "quantize", str(models["llama3"]), "--type", "IQ2_XS",
                          "--calibration", "default", "--out", str(slow / "x.gguf"), "--json-progress"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=ctrl_c_reaches_it)
    for line in p.stdout:
        e = json.loads(line)
        if e.get("stage") == "imatrix" and e["done"] < e["total"]:
            break
    # hold llama.cpp's worker where it is, so the job cannot finish before the interrupt lands
    workers = psutil.Process(p.pid).children(recursive=True)
    assert workers, "the llama.cpp worker had already ended"
    for w in workers:
        w.suspend()
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=120)  # a guard against a hang, not a speed requirement
    err = p.stderr.read()
    assert rc == 2 and err.strip().splitlines() == ["nibble: cancelled; no output was written"], err
    for w in workers:
        assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE
    assert list(slow.iterdir()) == []


def test_bad_inputs_give_one_clear_line(models, tmp_path):
    # missing config.json
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("quantize", str(empty), "--type", "Q4_K_M", "--out", str(tmp_path / "a.gguf"))
    one_error_line(r, "config.json")

    # unsupported architecture: named, and the supported ones listed
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(models["llama3"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPTNeoXForCausalLM"], "gpt_neox"
    (odd / "config.json").write_text(json.dumps(cfg))
    r = _cli("quantize", str(odd), "--type", "Q4_K_M", "--out", str(tmp_path / "b.gguf"))
    one_error_line(r, "GPTNeoXForCausalLM", "LlamaForCausalLM")

    # truncated safetensors: the file is named
    trunc = tmp_path / "trunc"
    shutil.copytree(models["llama3"], trunc)
    st = trunc / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    r = _cli("quantize", str(trunc), "--type", "Q8_0", "--out", str(tmp_path / "c.gguf"))
    one_error_line(r, "model.safetensors", "truncated")

    # no tokenizer
    notok = tmp_path / "notok"
    shutil.copytree(models["llama3"], notok)
    (notok / "tokenizer.json").unlink()
    r = _cli("quantize", str(notok), "--type", "Q8_0", "--out", str(tmp_path / "d.gguf"))
    one_error_line(r, "tokenizer")

    # missing output folder: named, and what to do
    r = _cli("quantize", str(models["llama3"]), "--type", "Q8_0", "--out", str(tmp_path / "nope" / "e.gguf"))
    line = one_error_line(r, str(tmp_path / "nope"), "does not exist")
    assert line.startswith("nibble: error: --out: output path ") and line.endswith("choose another output path")

    # an unknown type
    r = _cli("quantize", str(models["llama3"]), "--type", "Q9_9", "--out", str(tmp_path / "f.gguf"))
    one_error_line(r, "Q9_9", "Q4_K_M")

    # not a GGUF, and a truncated GGUF
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all")
    r = _cli("inspect", str(bogus))
    one_error_line(r, "bogus.gguf", "not a GGUF")
    good = tmp_path / "good.gguf"
    from engine.gguf.quantize import quantize

    quantize(models["qwen2"], "Q8_0", good)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    r = _cli("inspect", str(cut))
    one_error_line(r, "cut.gguf", "truncated or corrupt")
    # nothing half-written anywhere
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_disk_space_checked_before_writing(models, tmp_path, monkeypatch):
    import shutil as sh

    from engine.gguf.quantize import quantize

    real = sh.disk_usage
    monkeypatch.setattr(sh, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(NibbleError, match="not enough disk space"):
        quantize(models["qwen2"], "Q4_K_M", tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def _safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor shapes from the safetensors headers, read here without any safetensors code."""
    import struct

    shapes = {}
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def test_inspect_reads_headers_only(models, f32_ggufs):
    import sentencepiece as spm

    from engine.models.inspect import inspect_model

    hf = inspect_model(models["qwen3"])
    cfg = json.loads((models["qwen3"] / "config.json").read_text())
    shapes = _safetensors_shapes(models["qwen3"])
    assert hf.architecture == "Qwen3ForCausalLM" and hf.tokenizer == "bpe" and hf.chat_template
    assert hf.parameters == sum(int(np.prod(s)) for s in shapes.values())
    assert {t.name: list(t.shape) for t in hf.tensors} == shapes
    assert (hf.vocab_size, hf.layers, hf.hidden_size) == (cfg["vocab_size"], cfg["num_hidden_layers"],
                                                          cfg["hidden_size"])
    assert any(t.name.endswith("q_norm.weight") for t in hf.tensors)
    g = inspect_model(f32_ggufs["llama2"])
    original = inspect_model(models["llama2"])
    assert g.format == "gguf" and g.tokenizer == "sentencepiece" and g.file_type == "F32"
    sp_vocab = spm.SentencePieceProcessor(model_file=str(models["llama2"] / "tokenizer.model")).vocab_size()
    assert g.vocab_size == original.vocab_size == sp_vocab
    assert g.parameters == original.parameters  # every weight converted, none added
    assert g.file_bytes == f32_ggufs["llama2"].stat().st_size
    r = _cli("inspect", str(models["qwen2"]), "--json")
    data = json.loads(r.stdout)
    assert data["architecture"] == "Qwen2ForCausalLM" and any(t["name"].endswith("q_proj.bias") for t in data["tensors"])
