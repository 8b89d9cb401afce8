"""AWQ for every dense family beyond Llama/Qwen: Gemma 2 and 3 (offset norms, post-block norms, sliding
windows), Phi-3 (fused qkv and gate_up, with and without shared key/value heads), GLM-4 (post-block norms,
fused gate_up, biased q/k/v), Granite (embedding, residual and attention multipliers) and SmolLM3 (layers
without rope).

Per family, one tiny model (hidden 64, two or seven layers, a few large-activation channels as trained
models have), quantized once: the folder is the AutoAWQ GEMM layout transformers reads; Nibble's loader
computes what transformers computes with the dequantized weights; AWQ's KL divergence from the original
is below round-to-nearest's on held-out text. Mixture-of-experts families and Qwen3.5 (linear-attention
layers) refuse in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.awq import apply_awq_to_weights, load_awq, quantize_awq
from engine.awq import pack as awq_pack
from engine.awq.search import fake_quantize
from engine.core.errors import NibbleError
from eval_models import EVAL_TEXT
from familymodels import make_family_model

G = 32
LLAMA_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# key -> (familymodels spec, config overrides, the linears AWQ must quantize, the norms fed to q/k/v and MLP)
CASES = {
    "gemma2": ("gemma2", {}, LLAMA_LINEARS, ("input_layernorm", "pre_feedforward_layernorm")),
    "gemma3": ("gemma3", {"num_hidden_layers": 2}, LLAMA_LINEARS, ("input_layernorm", "pre_feedforward_layernorm")),
    "phi3": ("phi3", {"num_key_value_heads": 4}, ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj",
                                                   "mlp.down_proj"), ("input_layernorm", "post_attention_layernorm")),
    "phi4-mini": ("phi4-mini", {}, ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"),
                  ("input_layernorm", "post_attention_layernorm")),
    "glm4": ("glm4", {"num_key_value_heads": 4}, LLAMA_LINEARS[:4] + ("mlp.gate_up_proj", "mlp.down_proj"),
             ("input_layernorm", "post_attention_layernorm")),
    "granite": ("granite", {"num_key_value_heads": 4}, LLAMA_LINEARS, ("input_layernorm", "post_attention_layernorm")),
    "smollm3": ("smollm3", {}, LLAMA_LINEARS, ("input_layernorm", "post_attention_layernorm")),
}


def _make(folder: Path, key: str) -> Path:
    """A tiny model of family ``key`` with initializer-sized weights and four loud channels into every
    layer's attention and MLP norms (the activations AWQ exists for)."""
    spec, overrides, _, norms = CASES[key]
    make_family_model(folder, spec, std=0.02, tok="qwen2", **overrides)  # a tokenizer.json, as AWQ reads
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        offset = 1.0 if spec.startswith("gemma") else 0.0
        for layer in model.model.layers:
            for n in norms:
                getattr(layer, n).weight[:4] = 20.0 - offset
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module", params=list(CASES))
def quantized(request, tmp_path_factory):
    key = request.param
    base = tmp_path_factory.mktemp(key)
    src = _make(base / "src", key)
    out = base / "awq"
    quantize_awq(src, out, group_size=G, samples=8, seqlen=64)
    return key, src, out


def _dense_from_file(src: Path, out: Path):
    """transformers' own model of ``src`` holding exactly the AWQ folder's tensors, its linears dequantized."""
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    seen = set()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        for name, t in dense.state_dict().items():
            base = name[: -len(".weight")]
            if base + ".qweight" in names:
                t.copy_(awq_pack.dequantize_gemm(f.get_tensor(base + ".qweight"), f.get_tensor(base + ".qzeros"),
                                                 f.get_tensor(base + ".scales"), G))
                seen.add(base.split(".layers.", 1)[1].split(".", 1)[1])
            elif name in names:
                t.copy_(f.get_tensor(name).float())
            else:
                assert name == "lm_head.weight" and dense.config.tie_word_embeddings, name
    return dense, seen


def _ids(src: Path, n: int = 128) -> torch.Tensor:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src)(EVAL_TEXT.read_text()[:4000], return_tensors="pt").input_ids[:, :n]


def _kld(ref, other, ids) -> float:
    with torch.no_grad():
        lp = torch.log_softmax(ref(ids).logits.float(), -1)
        lq = torch.log_softmax(other(ids).logits.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).mean().item()


def round_to_nearest(src: Path, group_size: int = G):
    """The float32 model with every decoder-layer linear rounded to 4 bits, per group: AWQ's baseline."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        for mod in model.model.layers.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.data = fake_quantize(mod.weight.data, group_size)
    return model


def test_folder_is_autoawq_gemm_and_loader_matches_transformers(quantized):
    from transformers import AutoConfig, AwqConfig

    key, src, out = quantized
    qc = AwqConfig.from_dict(AutoConfig.from_pretrained(out).quantization_config)
    assert (qc.bits, qc.group_size, qc.zero_point) == (4, G, True)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["version"] == "gemm"
    dense, seen = _dense_from_file(src, out)
    assert seen == set(CASES[key][2]), key
    model = load_awq(out, "cpu")
    ids = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(ids).logits, dense(ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (key, (a - b).abs().max().item())


def test_awq_beats_round_to_nearest(quantized):
    from transformers import AutoModelForCausalLM

    key, src, out = quantized
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    rtn = round_to_nearest(src)
    ids = _ids(src)
    assert ids.shape[1] == 128
    awq_kld, rtn_kld = _kld(ref, load_awq(out, "cpu"), ids), _kld(ref, rtn, ids)
    assert awq_kld < 0.9 * rtn_kld, (key, awq_kld, rtn_kld)


def test_folded_scales_keep_the_function(quantized, tmp_path):
    """Scales folded into norms (Gemma's 1 + w), fused projections' rows and producers, without clipping or
    quantization: the model must compute what it computed before."""
    from transformers import AutoModelForCausalLM

    key, src, _ = quantized
    out = apply_awq_to_weights(src, tmp_path / "scaled", group_size=G, samples=4, seqlen=64, clip=False).out_dir
    orig = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    scaled = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    norm = CASES[key][3][0]
    assert not torch.allclose(getattr(orig.model.layers[0], norm).weight, getattr(scaled.model.layers[0], norm).weight)
    ids = torch.randint(3, 300, (1, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = orig(ids).logits, scaled(ids).logits
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), (key, (a - b).abs().max().item())


def test_calibration_runs_the_models_own_layers(quantized):
    """The states AWQ calibrates each layer on are the model's own: embeddings with their multiplier, each
    layer's rope and sliding window as transformers runs the whole model, and AWQ's residual stream (post-block
    norms, multipliers) is what the decoder layer's own forward computes with the quantized weights."""
    from transformers import AutoModelForCausalLM

    from engine.awq import layer as awq_layer
    from engine.awq.io import WeightReader
    from engine.awq.layer import LayerQuantizer
    from engine.awq.quantize import _build_model_skeleton, _materialise, calibration_inputs
    from engine.core.progress import Reporter
    from engine.models import families

    key, src, _ = quantized
    raw = json.loads((src / "config.json").read_text())
    family = families.find(raw)
    ids = _ids(src, 48).repeat(2, 1)
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        states = ref(ids, output_hidden_states=True).hidden_states
    _, model = _build_model_skeleton(src, raw, family)
    reader, cpu = WeightReader(src), torch.device("cpu")

    def layer_forward(layer, x, pos, mask):
        y = layer(x, position_embeddings=pos, attention_mask=mask)
        return y[0] if isinstance(y, tuple) else y

    with torch.inference_mode():
        x, attention, residual = calibration_inputs(family, raw, model, reader, ids, cpu)
        assert torch.allclose(x, states[0], atol=1e-5), key
        for i in range(len(states) - 2):  # the last state is after the final norm
            pos, mask = attention[i]
            layer = _materialise(model, model.model.layers[i], f"model.layers.{i}.", reader, cpu)
            assert torch.allclose(layer_forward(layer, x, pos, mask), states[i + 1], atol=1e-4), (key, i)
            layer.to_empty(device="meta")
            # where memory allows, down's inputs are kept from the statistics pass and the next layer's inputs
            # come from down alone; with no room, the whole MLP runs again: both must be the layer's own forward
            for room in (True, False):
                fresh = _materialise(model, model.model.layers[i], f"model.layers.{i}.", reader, cpu)
                out = torch.empty_like(x)
                with pytest.MonkeyPatch.context() as mp:
                    if not room:
                        mp.setattr(awq_layer, "free_memory", lambda _dev: 0)
                    LayerQuantizer(fresh, family.awq, pos=pos, mask=mask, norm_offset=family.norm_offset,
                                   residual=residual, group_size=G, bits=4, chunk=1, reporter=Reporter(),
                                   clip=True).run(x, out, torch.arange(1))
                # exact but where scales were folded into v and up: their new fp16 group scales move o's and
                # down's inputs by ~2^-11 (a post-block norm magnifies that to ~3e-3 of the stream); a missed
                # multiplier or norm moves it ~1
                err = ((out - layer_forward(fresh, x, pos, mask)).abs().max() / states[i + 1].abs().max()).item()
                assert err < 1e-2, (key, i, room, err)
            x = states[i + 1]


@pytest.mark.parametrize("spec,why", [("mixtral", "mixture-of-experts"), ("qwen3moe", "mixture-of-experts"),
                                      ("qwen35moe", "mixture-of-experts"), ("qwen3next", "mixture-of-experts"),
                                      ("llama4", "mixture-of-experts"),
                                      ("qwen35", "Qwen3.5's linear-attention")])
def test_moe_and_hybrid_families_refuse_in_one_line(tmp_path, spec, why):
    src = make_family_model(tmp_path / "src", spec, std=0.02)
    with pytest.raises(NibbleError, match=rf"^[^\n]*config.json: .* not supported for AWQ; AWQ of {why}[^\n]*$"):
        quantize_awq(src, tmp_path / "o", group_size=G, samples=2, seqlen=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
