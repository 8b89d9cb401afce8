"""Every registered family against llama.cpp's own converter, on tiny random models with wide weights.

For each family: Nibble's GGUF has llama.cpp's tensors (names, shapes, types, data) and metadata; llama.cpp
computes the same logits from both files and, in F32, the logits transformers computes; llama.cpp
tokenizes llama.cpp's test strings as the model's own tokenizer does; the estimate picks the types
llama.cpp's quantizer picks. One model, one conversion by each tool, per family.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clitools import one_error_line
from familymodels import REFERENCE_ARGS, SHAPE, SPECS, logits_reference, make_family_model
from llama_source import cases, reference_converter, vendor_models

ROOT = Path(__file__).resolve().parent.parent
TEXT = ("The quick brown fox jumps over the lazy dog. 1234567 apples cost $3.50 each! "
        "It's, I'm, we'll: contractions are everywhere. def f(x): return x ** 2")
# Keys llama.cpp defaults when absent, with those defaults (the installed gguf-py writes fewer of them).
DEFAULTS = {"tokenizer.ggml.add_eos_token": False}


@pytest.fixture(scope="module", params=list(SPECS))
def fam(request, tmp_path_factory):
    from engine.gguf.convert import convert_to_gguf

    key = request.param
    base = tmp_path_factory.mktemp(key)
    folder = make_family_model(base / "model", key)
    ref = base / "reference.gguf"
    pre = SPECS[key][2] or "default"
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "reference_convert.py"), str(reference_converter()),
                        str(folder), str(ref), pre, *REFERENCE_ARGS.get(key, [])],
                       capture_output=True, text=True, cwd=base)
    assert r.returncode == 0, r.stderr[-2000:]
    return key, folder, convert_to_gguf(folder, base / "nibble.gguf"), ref


def _fields(path) -> tuple[dict, dict]:
    import gguf

    r = gguf.GGUFReader(path)
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith(("GGUF.", "general."))}
    return {**DEFAULTS, **kv}, {t.name: t for t in r.tensors}


def test_gguf_matches_llama_cpp_converter(fam):
    key, _, ours, ref = fam
    kv_a, t_a = _fields(ours)
    kv_b, t_b = _fields(ref)
    assert sorted(t_a) == sorted(t_b), key
    for name, t in t_a.items():
        u = t_b[name]
        assert (list(t.shape), t.tensor_type) == (list(u.shape), u.tensor_type), name
        assert np.array_equal(np.asarray(t.data), np.asarray(u.data)), name
    assert sorted(kv_a) == sorted(kv_b), key
    for k in kv_a:
        assert kv_a[k] == kv_b[k], k


def _llama(path, **kw):
    import llama_cpp

    return llama_cpp.Llama(str(path), verbose=False, n_ctx=256, **kw)


def _ids(folder: Path, text: str) -> list[int]:
    """The model's own tokenizer: sentencepiece itself, or tokenizer.json through tokenizers."""
    if (folder / "tokenizer.model").is_file():
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(text)
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def _logits(path, ids) -> np.ndarray:
    llm = _llama(path, logits_all=True)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_logits_match_llama_cpp_converter_and_transformers(fam):
    key, folder, ours, ref = fam
    cfg = json.loads((folder / "config.json").read_text())
    bos = cfg.get("bos_token_id", (cfg.get("text_config") or {}).get("bos_token_id"))
    ids = ([bos] if bos is not None else []) + _ids(folder, TEXT)
    assert len(ids) > 24  # past the sliding window of the families that have one
    a, b = _logits(ours, ids), _logits(ref, ids)
    pa, pb = _log_softmax(a), _log_softmax(b)
    kld = (np.exp(pb) * (pb - pa)).sum(-1).mean()
    assert kld < 1e-4, (key, kld)
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.99, key
    hf = logits_reference(folder, ids)
    assert np.abs(a - hf).max() < 0.02 * np.abs(hf).max(), key
    assert (a.argmax(-1) == hf.argmax(-1)).mean() >= 0.95, key


def test_llama_cpp_tokenizes_like_the_model_tokenizer(fam):
    key, folder, ours, _ = fam
    llm = _llama(ours, vocab_only=True)
    strings = [t for t, _ in cases(vendor_models(), "ggml-vocab-llama-bpe")]
    assert len(strings) > 20
    for text in strings:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == _ids(folder, text), (key, text)


def test_estimate_types_match_llama_dry_run(fam):
    from engine.estimate import load_plan
    from engine.estimate.file_size import layout
    from engine.estimate.plan import plan_from_hf
    from engine.estimate.tensor_types import parse_file_type

    key, folder, _, ref = fam
    types = ["Q4_K_M", "Q3_K_S", "Q8_0"]
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "llama_dry_run.py"), str(ref), *types],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    dry = json.loads(out.stdout)
    plan = load_plan(folder)
    assert plan.metadata_exact
    from safetensors import safe_open

    table = {}
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "np") as st:
            for n in st.keys():
                sl = st.get_slice(n)
                table[n] = {"dtype": sl.get_dtype(), "shape": sl.get_shape()}
    hub_like = plan_from_hf(json.loads((folder / "config.json").read_text()), table, source=str(folder),
                            source_kind="hub", source_bytes=0, metadata_bytes=0)
    assert [(t.name, t.ne) for t in hub_like.tensors] == [(t.name, t.ne) for t in plan.tensors]
    for t in types:
        lay = layout(plan, parse_file_type(t))
        assert dict(lay.types) == dry[t]["types"], (key, t)
        assert abs(lay.tensor_bytes / 2**20 - dry[t]["quant_mib"]) < 0.006, (key, t)


@pytest.mark.parametrize("change,field", [
    ({"model_type": "llama"}, "model_type"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}, "rope_type"),
    ({"architectures": ["Gemma9ForCausalLM"]}, "architecture"),
])
def test_bad_config_one_line_exit_2_nothing_written(tmp_path, change, field):
    import shutil

    src = make_family_model(tmp_path / "src", "granite")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, **change}))
    for args in (["quantize", str(bad), "--type", "Q8_0", "--out", str(tmp_path / "o.gguf")],
                 ["quantize", str(bad), "--type", "AWQ", "--out", str(tmp_path / "awq")],
                 ["estimate", str(bad)]):
        r = subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=ROOT)
        one_error_line(r, "config.json", field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "src"]


QWEN35_BAD = [
    ({"model_type": "qwen3_5_moe_text"}, "model_type"),
    ({"linear_num_value_heads": 3}, "linear_num_value_heads"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25,
                          "mrope_section": [4, 4, 4]}}, "mrope_section"),
    ({"layer_types": ["linear_attention", "sliding_attention"] * 2}, "layer_types"),
]


def test_qwen35_variants_refused_in_one_line(tmp_path):
    """Qwen3.5 configs llama.cpp's graph would run differently: one line naming the field; through the CLI, exit
    2 and nothing written."""
    import shutil

    from engine.core.errors import NibbleError
    from engine.models import families

    src = make_family_model(tmp_path / "src", "qwen35")
    cfg = json.loads((src / "config.json").read_text())
    for change, field in QWEN35_BAD:
        with pytest.raises(NibbleError, match=rf"^config.json: [^\n]*{field}[^\n]*$"):
            families.for_config({**cfg, **change}, "config.json")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    for change, field in QWEN35_BAD[::2]:
        (bad / "config.json").write_text(json.dumps({**cfg, **change}))
        r = subprocess.run([sys.executable, "-m", "engine", "quantize", str(bad), "--type", "Q8_0", "--out",
                            str(tmp_path / "o.gguf")], capture_output=True, text=True, cwd=ROOT)
        one_error_line(r, "config.json", field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "src"]


@pytest.mark.parametrize("key,arch,name,bad", [
    ("qwen3next", "Qwen3NextForCausalLM", "Qwen3-Next", (
        ({"mlp_only_layers": [1]}, "mlp_only_layers"), ({"norm_topk_prob": False}, "norm_topk_prob"),
        ({"linear_num_value_heads": 3}, "linear_num_value_heads"), ({"model_type": "qwen3_5_text"}, "model_type"))),
    ("llama4", "Llama4ForCausalLM", "Llama 4", (
        ({"attention_chunk_size": 16}, "attention_chunk_size"), ({"use_qk_norm": False}, "use_qk_norm"),
        ({"no_rope_layers": [1, 0, 1, 0]}, "no_rope_layers"), ({"attn_temperature_tuning": False}, "temperature"))),
])
def test_variants_llama_cpp_runs_differently_refused_in_one_line(key, arch, name, bad):
    """Configs llama.cpp's graph would run differently (routing, chunking, norms, rope pattern) are refused
    in one line naming the field."""
    import transformers

    from engine.core.errors import NibbleError
    from engine.models import families

    model_type, _, _, overrides = SPECS[key]
    cfg = {**transformers.AutoConfig.for_model(model_type, **{**SHAPE, "vocab_size": 400, **overrides}).to_dict(),
           "architectures": [arch]}
    assert families.for_config(cfg, "config.json").name == name
    for change, field in bad:
        with pytest.raises(NibbleError, match=rf"^config.json: [^\n]*{field}[^\n]*$"):
            families.for_config({**cfg, **change}, "config.json")


def test_recurrent_state_and_kv_cache_as_llama_cpp_allocates(fam):
    """Hybrid families: llama.cpp keeps a KV cache for the full-attention layers only and a recurrent state for
    the others; the estimate (from the folder and from the GGUF) is the two buffers llama.cpp logs."""
    from engine.estimate import kv_cache_bytes, load_plan

    key, folder, ours, _ = fam
    if key not in ("qwen35", "qwen3next"):
        pytest.skip("the families with recurrent layers")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "llama_rss.py"), str(ours), "1000", "--short"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["kv_mib"] > 0 and measured["rs_mib"] > 0
    for plan in (load_plan(folder), load_plan(ours)):
        assert sum(plan.recurrent_layers) == 3
        state = 2 * kv_cache_bytes(plan, 1000) - kv_cache_bytes(plan, 2000)  # KV doubles, the state does not
        # by hand, llama.cpp's n_embd_r + n_embd_s F32 values per layer: a 3-step window of q, k, v channels
        # (2 key heads x 16 twice, 4 value heads x 16) and a 16 x 64 state matrix
        assert state == 3 * 4 * (3 * (2 * 2 * 16 + 4 * 16) + 16 * 64)
        assert round(state / 2**20, 2) == measured["rs_mib"], key
        assert round((kv_cache_bytes(plan, 1000) - state) / 2**20, 2) == measured["kv_mib"], key


def test_stacked_experts_convert_as_llama_cpp(fam, tmp_path):
    """Experts stored as one tensor per layer (gate and up fused) give the GGUF llama.cpp's converter makes from
    the same experts stored one by one."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from engine.gguf.convert import convert_to_gguf

    key, folder, _, ref = fam
    if key != "qwen35moe":
        pytest.skip("one mixture-of-experts family")
    stacked = tmp_path / "stacked"
    shutil.copytree(folder, stacked)
    weights = load_file(str(stacked / "model.safetensors"))
    for layer in {n.split(".experts.")[0] for n in weights if ".experts." in n}:
        n = sum(1 for k in weights if k.startswith(f"{layer}.experts.") and k.endswith(".down_proj.weight"))
        take = [{w: weights.pop(f"{layer}.experts.{i}.{w}.weight") for w in ("gate_proj", "up_proj", "down_proj")}
                for i in range(n)]
        weights[f"{layer}.experts.gate_up_proj"] = np.stack([np.concatenate([e["gate_proj"], e["up_proj"]])
                                                              for e in take])
        weights[f"{layer}.experts.down_proj"] = np.stack([e["down_proj"] for e in take])
    save_file(weights, str(stacked / "model.safetensors"), metadata={"format": "pt"})
    _, t_a = _fields(convert_to_gguf(stacked, tmp_path / "stacked.gguf"))
    _, t_b = _fields(ref)
    assert sorted(t_a) == sorted(t_b) and any(".ffn_gate_exps." in n for n in t_a)
    for name, t in t_a.items():
        assert list(t.shape) == list(t_b[name].shape), name
        assert np.array_equal(np.asarray(t.data), np.asarray(t_b[name].data)), name


def test_exaone4_sliding_window_only_where_llama_cpp_runs_it():
    """llama.cpp's EXAONE 4 graph runs sliding windows (and rope-free global layers) only at 64 layers."""
    from engine.core.errors import NibbleError
    from engine.models import families

    cfg = {"architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "hidden_size": 64,
           "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400,
           "max_position_embeddings": 4096, "num_hidden_layers": 4, "sliding_window": 8}
    with pytest.raises(NibbleError, match=r"^config.json: sliding_window is set at 4 layers; .* only at 64 layers"):
        families.for_config(cfg, "config.json")
    assert families.for_config({**cfg, "num_hidden_layers": 64}, "config.json").name == "EXAONE 4"
    assert families.for_config({**cfg, "sliding_window": None}, "config.json").name == "EXAONE 4"
