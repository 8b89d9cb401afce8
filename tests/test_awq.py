"""AWQ quantization: GEMM layout bit by bit, output folders transformers accepts, quality against
round-to-nearest, the pure-torch loader, bad input and cancel."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from clitools import one_error_line
from engine.awq import apply_awq_to_weights, load_awq, quantize_awq
from engine.awq import pack as awq_pack
from engine.awq.search import fake_quantize
from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter

WORDS = ("the a one small big red blue cat dog bird tree river stone house sees finds eats likes near under "
         "over and but then quickly slowly today yesterday green old new happy sad runs jumps sleeps").split()
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _text(n: int, seed: int) -> str:
    r = random.Random(seed)
    return " ".join(" ".join(r.choice(WORDS) for _ in range(r.randint(4, 12))).capitalize() + "." for _ in range(n))


def _make_model(folder: Path, kind: str, *, hidden=128, inter=256, heads=4, kv=2, tie=False, head_dim=None):
    """A tiny random model with a trained BPE tokenizer and a few large-activation channels,
    as trained LLMs have (the case AWQ exists for)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen3Config

    folder.mkdir(parents=True)
    text = _text(1500, 0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[kind]
    extra = {"head_dim": head_dim} if head_dim else {}
    cfg = cls(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=2, num_attention_heads=heads,
              num_key_value_heads=kv, vocab_size=len(fast), max_position_embeddings=256, tie_word_embeddings=tie,
              bos_token_id=0, eos_token_id=1, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[:4] = 20.0
    model.save_pretrained(folder)
    (folder / "calib.txt").write_text(text)
    return folder


def _kld(model_dir: Path, other, text: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(text, return_tensors="pt").input_ids[:, :128]
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        lp = torch.log_softmax(ref(ids).logits.float(), -1)
        lq = torch.log_softmax(other(ids).logits.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).mean().item()


def _rtn_model(model_dir: Path, group_size: int):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, mod in m.model.layers.named_modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.data = fake_quantize(mod.weight.data, group_size)
    return m


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _make_model(tmp_path_factory.mktemp("m") / "llama", "llama", kv=4)


@pytest.fixture(scope="module")
def llama_awq(llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "llama-awq"
    res = quantize_awq(llama, out, group_size=32, calibration=llama / "calib.txt", samples=16, seqlen=64)
    return out, res


# --------------------------------------------------------------------------- GEMM layout

def _autoawq_reference_pack(intweight_t: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's WQLinear_GEMM packing loop, written out: intweight [in, out] -> int32 [in, out/8]."""
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    rows, cols = intweight_t.shape
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for col in range(cols // 8):
        for i in range(8):
            packed[:, col] |= intweight_t[:, col * 8 + order_map[i]].to(torch.int64) << (i * 4)
    packed = torch.where(packed >= 2 ** 31, packed - 2 ** 32, packed)
    return packed.to(torch.int32)


def test_pack_matches_autoawq_layout_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    out, inp, gs = 48, 64, 16
    iw = torch.randint(0, 16, (out, inp), generator=g)
    zr = torch.randint(0, 16, (out, inp // gs), generator=g)
    sc = torch.rand(out, inp // gs, generator=g) + 0.01
    qweight, qzeros, scales = awq_pack.pack_gemm(iw, zr, sc)
    assert qweight.dtype == torch.int32 and qweight.shape == (inp, out // 8)
    assert qzeros.dtype == torch.int32 and qzeros.shape == (inp // gs, out // 8)
    assert scales.dtype == torch.float16 and scales.shape == (inp // gs, out)
    assert torch.equal(qweight, _autoawq_reference_pack(iw.t()))
    assert torch.equal(qzeros, _autoawq_reference_pack(zr.t()))
    # a single 15 in output column 1 lands in bits 16..19 (order 0,2,4,6,1,3,5,7)
    one = torch.zeros(8, 8, dtype=torch.int64)
    one[1, 0] = 15
    assert awq_pack.pack_gemm(one, torch.zeros(8, 1, dtype=torch.int64), torch.ones(8, 1))[0][0, 0].item() == 15 << 16
    # round trip
    uw, uz = awq_pack.unpack_gemm(qweight, qzeros)
    assert torch.equal(uw, iw.t().to(torch.int32)) and torch.equal(uz, zr.t().to(torch.int32))
    deq = awq_pack.dequantize_gemm(qweight, qzeros, scales, gs)
    want = (iw - zr.repeat_interleave(gs, 1)).float() * sc.half().float().repeat_interleave(gs, 1)
    assert torch.equal(deq, want)


# --------------------------------------------------------------------------- output folder

def test_output_folder_layout_and_config(llama, llama_awq):
    from transformers import AutoConfig, AutoTokenizer, AwqConfig

    out, res = llama_awq
    assert res.layers == 2 and res.out_dir == out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "awq"
    assert {k: cfg["quantization_config"][k] for k in ("bits", "group_size", "zero_point", "version")} == {
        "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm"}
    parsed = AwqConfig.from_dict(AutoConfig.from_pretrained(out).quantization_config)
    assert parsed.bits == 4 and parsed.group_size == 32 and parsed.zero_point
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / f).read_bytes() == (llama / f).read_bytes()
    assert AutoTokenizer.from_pretrained(out)("the cat").input_ids == AutoTokenizer.from_pretrained(llama)("the cat").input_ids
    assert not list(out.parent.glob(".*partial*"))

    src = json.loads((llama / "config.json").read_text())
    hidden, inter = src["hidden_size"], src["intermediate_size"]
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
              "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
              "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden)}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        for i in range(2):
            for lin, (inp, outw) in shapes.items():
                p = f"model.layers.{i}.{lin}"
                assert f"{p}.weight" not in names
                qw, qz, sc = f.get_tensor(p + ".qweight"), f.get_tensor(p + ".qzeros"), f.get_tensor(p + ".scales")
                assert (qw.dtype, tuple(qw.shape)) == (torch.int32, (inp, outw // 8))
                assert (qz.dtype, tuple(qz.shape)) == (torch.int32, (inp // 32, outw // 8))
                assert (sc.dtype, tuple(sc.shape)) == (torch.float16, (inp // 32, outw))
                # every packed value re-packs to the same bits
                iw, iz = awq_pack.unpack_gemm(qw, qz)
                assert torch.equal(_autoawq_reference_pack(iw), qw) and torch.equal(_autoawq_reference_pack(iz), qz)
                assert (sc > 0).all()
            assert f.get_tensor(f"model.layers.{i}.input_layernorm.weight").dtype == torch.float16
        for n in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
            assert f.get_tensor(n).dtype == torch.float16
        assert len(names) == 2 * (7 * 3 + 2) + 3


def test_loader_matches_dequantized_weights_and_beats_rtn(llama, llama_awq):
    from transformers import AutoModelForCausalLM

    out, _ = llama_awq
    model = load_awq(out, "cpu")
    # an independent dense model from the stored tensors: the loader must compute the same function
    dense = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for name, t in dense.state_dict().items():
            base = name[: -len(".weight")]
            if any(base.endswith(l) for l in LINEARS):
                w = awq_pack.dequantize_gemm(f.get_tensor(base + ".qweight"), f.get_tensor(base + ".qzeros"),
                                             f.get_tensor(base + ".scales"), 32)
            else:
                w = f.get_tensor(name).float()
            t.copy_(w)
    ids = torch.randint(2, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, dense(ids).logits, atol=1e-4, rtol=1e-4)
    held_out = _text(40, seed=7)
    awq_kld = _kld(llama, model, held_out)
    rtn_kld = _kld(llama, _rtn_model(llama, 32), held_out)
    assert awq_kld < 0.8 * rtn_kld, (awq_kld, rtn_kld)


@pytest.mark.parametrize("kind,kw", [("qwen2", {"kv": 2}), ("qwen3", {"kv": 2, "head_dim": 64, "tie": True})])
def test_qwen_families_quantize_and_run(tmp_path, kind, kw):
    src = _make_model(tmp_path / kind, kind, **kw)
    out = tmp_path / f"{kind}-awq"
    quantize_awq(src, out, group_size=64, calibration=src / "calib.txt", samples=8, seqlen=64)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    if kind == "qwen2":  # q/k/v biases are kept, in fp16
        assert "model.layers.0.self_attn.q_proj.bias" in names
    else:
        assert "model.layers.0.self_attn.q_norm.weight" in names and "lm_head.weight" not in names
    model = load_awq(out, "cpu")
    kld = _kld(src, model, _text(30, seed=3))
    rtn = _kld(src, _rtn_model(src, 64), _text(30, seed=3))
    assert kld < rtn, (kld, rtn)


def test_apply_awq_to_weights_keeps_the_function(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "scaled"
    apply_awq_to_weights(llama, out, group_size=32, calibration=llama / "calib.txt", samples=8, seqlen=64, clip=False)
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    scaled = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    orig = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    n0 = orig.model.layers[0].input_layernorm.weight
    n1 = scaled.model.layers[0].input_layernorm.weight
    assert not torch.allclose(n0, n1)  # scales were folded in
    ids = torch.randint(2, 300, (1, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(orig(ids).logits, scaled(ids).logits, atol=1e-3, rtol=1e-3)


# --------------------------------------------------------------------------- bad input, cancel

def _expect(match, **kw):
    with pytest.raises(NibbleError, match=match):
        quantize_awq(**kw)


def test_bad_inputs_say_what_to_do(llama, tmp_path):
    base = dict(model_dir=llama, out_dir=tmp_path / "o", calibration=llama / "calib.txt", samples=8, seqlen=64)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    _expect(r"GPT2LMHeadModel.*not supported.*Llama, Mistral.*Qwen2/2.5, Qwen3", **dict(base, model_dir=gpt2))
    _expect(r"group size 48 does not divide the hidden size .*128", **dict(base, group_size=48))
    _expect(r"3 bits.*4-bit", **dict(base, bits=3, group_size=32))
    _expect(r"calib.txt gave \d+ tokens, enough for \d+ samples of 64 tokens; 100000 samples need",
            **dict(base, samples=100000, group_size=32))
    if not torch.backends.mps.is_available():
        _expect(r"device mps.*no Apple Metal", **dict(base, device="mps", group_size=32))
    import engine.awq.config as awq_config

    orig = awq_config.free_memory
    awq_config.free_memory = lambda dev: 1 << 20
    try:
        _expect(r"calibration batch needs about .* fewer calibration samples \(now 8\), a shorter sample length \(now 64\)",
                **dict(base, group_size=32))
    finally:
        awq_config.free_memory = orig
    assert not (tmp_path / "o").exists()


def test_cancel_leaves_nothing(llama, tmp_path):
    class CancelAfterFirstLayer(Reporter):
        def __init__(self):
            self.seen = []

        def progress(self, done, total, message="", **extra):
            self.seen.append(done)

        def is_cancelled(self):
            return 1 in self.seen

    rep = CancelAfterFirstLayer()
    with pytest.raises(Cancelled):
        quantize_awq(llama, tmp_path / "out", group_size=32, calibration=llama / "calib.txt", samples=8, seqlen=64,
                     reporter=rep)
    assert rep.seen[:2] == [0, 1]
    assert list(tmp_path.iterdir()) == []


def test_cli_quantize_awq_with_shipped_calibration(llama, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cli-awq"
    cmd = [sys.executable, "-m", "engine", "quantize", str(llama), "--type", "AWQ", "--group-size", "32",
           "--samples", "4", "--seqlen", "64", "--out", str(out)]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "layer 2/2" in done.stderr and (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["quantization_config"]["group_size"] == 32
    card = (out / "README.md").read_text()  # the folder's own card, not the original model's README
    assert card.startswith("---\n") and "quantized_by: Nibble" in card and "| AWQ | AWQ W4 g32 |" in card
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "other"), "--group-size", "48"], cwd=root,
                         capture_output=True, text=True, timeout=300)
    line = one_error_line(bad)
    assert line.startswith("nibble: error: --group-size: group size 48 does not divide")


def test_scale_search_walks_the_grid_to_its_best_in_eleven_tries():
    """The scale grid is tried coarse to fine; on error curves with one minimum (the usual shape along the
    ratio) it finds what trying all 21 candidates finds, in at most 11 tries, none twice."""
    from engine.awq.search import walk_grid

    rng = random.Random(1)
    for _ in range(300):
        centre, width, rtn = rng.uniform(-0.2, 1.2), rng.uniform(0.3, 5), rng.uniform(0.8, 1.5)
        curve = [rtn] + [width * (i / 20 - centre) ** 2 + 1 for i in range(20)]
        tried = []
        best = walk_grid(lambda idx: (tried.extend(idx), [curve[i] for i in idx])[1], 20)
        assert best == min(range(21), key=lambda i: (curve[i], i)), (centre, width, rtn)
        assert len(tried) == len(set(tried)) <= 11
