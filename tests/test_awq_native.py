"""AWQ's own Llama-style layers (engine.awq.native) against transformers' whole model.

For the plain Llama-style families AWQ builds its calibration layers itself, so the command never imports
transformers' modelling code. Each variant a user meets (Llama 3 rope scaling, linear rope, shared and
unshared key/value heads, Mistral, Qwen2's q/k/v biases, Qwen3's q/k norms, a sliding-window layer) must
compute, layer by layer, the hidden states transformers' own model computes; variants not described
there must fall back to transformers' model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinymodels import make_model

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
# name -> (tinymodels family, make_model arguments, config.json changes made after saving)
CASES = {
    "llama3-rope": ("llama3", dict(rope_scaling=LLAMA3_ROPE), {}),
    "llama-linear-rope-mha": ("llama3", dict(rope_scaling={"rope_type": "linear", "factor": 4.0}, kv_heads=4), {}),
    "llama-biases": ("llama3", {}, {"attention_bias": True, "mlp_bias": True}),
    "mistral": ("mistral", {}, {"sliding_window": None}),
    "qwen2": ("qwen2", {}, {}),
    "qwen2-sliding-layer": ("qwen2", {}, {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0,
                                          "layer_types": ["sliding_attention", "full_attention"]}),
    "qwen3": ("qwen3", {}, {}),
}


def _model(folder: Path, name: str) -> Path:
    fam, kw, changes = CASES[name]
    make_model(folder, fam, hidden=64, intermediate=128, dtype="float32", **kw)
    if changes:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(changes)
        (folder / "config.json").write_text(json.dumps(cfg))
        if any(k.endswith("bias") for k in changes):  # give the new biases values of their own
            from transformers import AutoModelForCausalLM

            m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            with torch.no_grad():
                for n, p in m.named_parameters():
                    if n.endswith("bias"):
                        p.copy_(0.5 * torch.randn_like(p))
            m.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("name", list(CASES))
def test_native_layers_compute_what_transformers_computes(tmp_path, name):
    from transformers import AutoModelForCausalLM

    from engine.awq import native
    from engine.awq.io import WeightReader
    from engine.awq.quantize import _build_model_skeleton, _materialise, _release, calibration_inputs
    from engine.models import families

    src = _model(tmp_path / name, name)
    raw = json.loads((src / "config.json").read_text())
    family = families.find(raw)
    config, model = _build_model_skeleton(src, raw, family)
    assert isinstance(model, native.Model), name
    ids = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        states = ref(ids, output_hidden_states=True).hidden_states
    reader, cpu = WeightReader(src), torch.device("cpu")
    with torch.inference_mode():
        x, attention, _ = calibration_inputs(family, raw, model, reader, ids, cpu)
        assert torch.equal(x, states[0]), name
        for i in range(config.num_hidden_layers - 1):  # the last state is after the final norm
            pos, mask = attention[i]
            if name == "qwen2-sliding-layer":
                assert (mask is not None) == (i == 0)
            layer = _materialise(model, model.model.layers[i], f"model.layers.{i}.", reader, cpu)
            y = layer(states[i], position_embeddings=pos, attention_mask=mask)
            scale = states[i + 1].abs().max()
            assert ((y - states[i + 1]).abs().max() / scale).item() < 1e-5, (name, i)
            _release(layer)


@pytest.mark.parametrize("change", [{"hidden_act": "gelu"}, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
                                    {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": None},
                                    {"model_type": "mistral", "architectures": ["MistralForCausalLM"],
                                     "num_key_value_heads": None}])
def test_variants_it_does_not_describe_use_transformers_model(change):
    from engine.awq import native
    from engine.models import families

    raw = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
           "max_position_embeddings": 256, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    assert native.build(raw, families.find(raw)) is None


def test_weights_that_do_not_match_the_config_are_refused_in_one_line(tmp_path):
    """A config.json edited (or swapped) so that it no longer describes the weights: one line naming the file
    and the tensor, and no output."""
    from engine.awq import quantize_awq
    from engine.core.errors import NibbleError

    src = _model(tmp_path / "src", "llama3-rope")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 192}))
    (src / "calib.txt").write_text("the quick brown fox jumps over the lazy dog. " * 100)
    with pytest.raises(NibbleError, match=r"^[^\n]*model\.safetensors: tensor model\.layers\.0\.mlp\.\w+_proj\.weight has "
                                          r"shape \[\d+, \d+\] but config\.json makes it [^\n]*download the model again$"):
        quantize_awq(src, tmp_path / "awq", group_size=32, calibration=src / "calib.txt", samples=2, seqlen=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_the_awq_command_never_imports_transformers_modelling_code(tmp_path):
    """The whole command, as the user runs it, on a Llama: no family's transformers model code is loaded (the
    auto module's table of names is, where Nibble's data folder does not keep it yet)."""
    src = _model(tmp_path / "src", "llama3-rope")
    (src / "calib.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    probe = ("import runpy, sys\n"
             "sys.argv = ['nibble'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('engine', run_name='__main__')\n"
             "finally:\n"
             "    print('MODELLING', sorted(m for m in sys.modules if m.startswith('transformers.models.')\n"
             "                              and 'modeling' in m and '.auto.' not in m))\n"
             "    print('SYMPY', 'sympy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe, "quantize", str(src), "--type", "AWQ", "--group-size", "32",
                          "--calibration", str(src / "calib.txt"), "--samples", "4", "--seqlen", "64",
                          "--out", str(tmp_path / "awq")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MODELLING []" in out.stdout, out.stdout[-2000:]
    # nor torch's symbolic-shape machinery, which materialising meta-device modules through torch's reference
    # kernels imports (2 s on a GPU machine)
    assert "SYMPY False" in out.stdout, out.stdout[-2000:]
    assert (tmp_path / "awq" / "model.safetensors").is_file()


TEXT = (" Leading space, then  two spaces.\nA new line\n\n\ttab 12345 67 naïve café 東京 🙂 don't <|im_end|> "
        "end of a turn,\r\nand the last   words   ")


@pytest.mark.parametrize("kind,config,stored", [("llama3", {}, True), ("demo", {}, True),
                                                 ("qwen2", {"tokenizer_class": "Qwen2Tokenizer"}, False),
                                                 ("llama3", {"add_prefix_space": True}, False)])
def test_calibration_ids_are_the_transformers_tokenizers_ids(tmp_path, kind, config, stored):
    """The calibration text becomes the ids transformers' tokenizer makes of it; where transformers loads
    tokenizer.json as stored (Llama 3's class, Nibble's demo), without transformers. A class that rebuilds the
    tokenizer by its own rules, or a setting that changes it, goes through transformers."""
    from transformers import AutoTokenizer

    from engine.core.resources import DEMO_DIR
    from engine.models.calibration import StoredTokenizer, calibration_tokenizer

    folder = DEMO_DIR if kind == "demo" else make_model(tmp_path / kind, kind, hidden=64, intermediate=128)
    if config:
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**tc, **config}))
    text = TEXT + Path(__file__).read_text(encoding="utf-8")[:3000]
    tok = calibration_tokenizer(folder)
    assert isinstance(tok, StoredTokenizer) == stored
    want = AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]
    assert tok(text, add_special_tokens=False)["input_ids"] == want
