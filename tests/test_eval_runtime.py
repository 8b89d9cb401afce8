"""eval, compare, chat, bench and stats on tiny real models (HF folder, F32 GGUF, Q4_0 GGUF)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from eval_models import EVAL_TEXT, build_tiny_llama

from clitools import one_error_line
from engine.core.errors import NibbleError
from engine.core.progress import Reporter

ROOT = pathlib.Path(__file__).resolve().parent.parent
CTX = 64


def cli(*args, input=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, input=input, timeout=timeout)


@pytest.fixture(scope="module")
def hf(tiny_llama_dir):
    from engine.runtime import open_runtime

    with open_runtime(tiny_llama_dir, n_ctx=256) as rt:
        yield rt


@pytest.fixture(scope="module")
def gguf_f32(tiny_gguf):
    from engine.runtime import open_runtime

    with open_runtime(tiny_gguf, n_ctx=256) as rt:
        yield rt


@pytest.fixture(scope="module")
def gguf_q4(tiny_gguf_q4):
    from engine.runtime import open_runtime

    with open_runtime(tiny_gguf_q4, n_ctx=256) as rt:
        yield rt


@pytest.fixture(scope="module")
def text():
    return EVAL_TEXT.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- eval


def test_model_against_itself_has_no_divergence(hf, text):
    from engine.analysis.evaluate import evaluate

    r = evaluate(hf, hf, text, ctx=CTX, max_chunks=4)
    assert r.tokens == 4 * (CTX - 1 - CTX // 2)
    assert r.kld_mean < 1e-9 and r.kld_max < 1e-9
    assert r.ppl_reference == pytest.approx(r.ppl_candidate, rel=1e-9)
    assert r.top1_agreement == 1.0
    assert r.delta_p_rms < 1e-9


def test_f32_gguf_is_close_and_q4_is_further(hf, gguf_f32, gguf_q4, text):
    from engine.analysis.evaluate import evaluate

    f32 = evaluate(hf, gguf_f32, text, ctx=CTX, max_chunks=4)
    q4 = evaluate(hf, gguf_q4, text, ctx=CTX, max_chunks=4)
    assert f32.kld_mean < 1e-5
    assert f32.top1_agreement > 0.97
    assert q4.kld_mean > 20 * f32.kld_mean
    assert q4.kld_p99 >= q4.kld_median and q4.kld_max >= q4.kld_p99
    assert q4.ppl_reference == pytest.approx(f32.ppl_reference)  # same reference, same tokens
    assert 0 < q4.top1_agreement < 1


def test_perplexity_matches_a_direct_computation(hf, text):
    """Window layout as llama-perplexity: BOS replaces each window's first token, second half is scored."""
    from engine.analysis.evaluate import evaluate

    r = evaluate(hf, hf, text, ctx=CTX, max_chunks=2)
    toks = hf.tokenize(text)
    assert toks[0] == hf.bos_id
    nll = []
    for i in range(2):
        w = [hf.bos_id] + toks[i * CTX + 1:(i + 1) * CTX]
        lg = hf.logits(w).astype(np.float64)
        lp = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
        for pos in range(CTX // 2, CTX - 1):
            nll.append(-lp[pos, w[pos + 1]])
    assert r.ppl_reference == pytest.approx(float(np.exp(np.mean(nll))), rel=1e-6)


def test_eval_opens_paths_with_the_default_text(tiny_gguf, tiny_gguf_q4):
    from engine.analysis.evaluate import evaluate

    r = evaluate(str(tiny_gguf), str(tiny_gguf_q4), ctx=CTX, max_chunks=2)
    assert r.tokens == 2 * (CTX - 1 - CTX // 2) and r.kld_mean > 0


def test_eval_json_names(tiny_gguf, tiny_gguf_q4):
    out = cli("eval", tiny_gguf, tiny_gguf_q4, "--ctx", CTX, "--chunks", 3, "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert set(d["reference"]) >= {"ppl"} and set(d["candidate"]) >= {"ppl"}
    assert set(d["kld"]) >= {"mean", "median", "p99", "max"}
    assert set(d["delta_p"]) >= {"mean", "rms"}
    assert 0 <= d["top1_agreement"] <= 1
    assert d["tokens"] == 3 * (CTX - 1 - CTX // 2)
    assert d["kld"]["mean"] > 0


def test_text_shorter_than_two_windows_is_refused(tiny_gguf, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a sentence or two. Not nearly enough for two windows.")
    out = cli("eval", tiny_gguf, tiny_gguf, "--text", short, "--ctx", CTX)
    one_error_line(out, "--ctx: ", "short.txt", str(2 * CTX), "use a longer text or a shorter context length")


def test_vocabulary_mismatch_is_refused(hf, tmp_path, text):
    from engine.analysis.evaluate import evaluate
    from engine.runtime import open_runtime

    # Qwen2-style tokenizer: as many tokens as the Llama-3-style one, but different ones.
    other = build_tiny_llama(tmp_path / "qwen", family="qwen2", hidden=64, intermediate=128)
    with open_runtime(other, n_ctx=256) as rt:
        assert rt.n_vocab == hf.n_vocab
        with pytest.raises(NibbleError, match="different vocabularies"):
            evaluate(hf, rt, text, ctx=CTX)
    # The same tokenizer over an output layer padded to more tokens
    import transformers

    padded = tmp_path / "padded"
    model = transformers.AutoModelForCausalLM.from_pretrained(hf.path)
    model.resize_token_embeddings(hf.n_vocab + 64)
    model.save_pretrained(padded)
    for f in hf.path.glob("tokenizer*"):
        (padded / f.name).write_bytes(f.read_bytes())
    with open_runtime(padded, n_ctx=256) as rt:
        with pytest.raises(NibbleError, match=rf"different vocabularies \({hf.n_vocab} vs {hf.n_vocab + 64} tokens\)"):
            evaluate(hf, rt, text, ctx=CTX)


def test_truncated_or_foreign_gguf_is_refused(tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = cli("eval", cut, tiny_gguf, "--ctx", CTX)
    one_error_line(out, "cut.gguf", "truncated")
    fake = tmp_path / "notes.gguf"
    fake.write_text("these are not weights\n" * 10)
    out = cli("eval", tiny_gguf, fake, "--ctx", CTX)
    one_error_line(out, "notes.gguf", "not a GGUF file")
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:40])
    out = cli("bench", head)
    one_error_line(out, "head.gguf")


def test_model_too_large_is_refused_before_loading(tiny_gguf, tiny_llama_dir, monkeypatch):
    import engine.runtime as runtime
    import engine.runtime.base as runtime_base

    monkeypatch.setattr(runtime_base, "free_memory", lambda device: 1024)
    for path in (tiny_gguf, tiny_llama_dir):
        with pytest.raises(NibbleError, match="needs about .* GiB .* free"):
            runtime.open_runtime(path)


def test_gpu_request_without_gpu_build_is_stated(tiny_gguf):
    import llama_cpp

    from engine.runtime import open_runtime

    with open_runtime(tiny_gguf, device="cuda", n_ctx=64) as rt:
        if llama_cpp.llama_supports_gpu_offload():
            assert rt.device != "cpu"
        else:
            assert rt.device == "cpu"
            assert any("no GPU support" in n for n in rt.notices)


# ---------------------------------------------------------------------------------------------------- compare


def test_compare_finds_the_first_diverging_token(hf, tiny_llama_dir, tmp_path):
    from engine.analysis.compare import compare
    from engine.runtime import open_runtime

    same = compare(hf, hf, "The lighthouse keeper wrote", max_tokens=12)
    assert same.first_divergence is None and same.text_a == same.text_b
    assert same.kld_max < 1e-9 and same.top1_agreement == 1.0

    # Same tokenizer, other weights: the greedy outputs part ways.
    other_dir = tmp_path / "reseeded"
    build_tiny_llama(other_dir, seed=7)
    with open_runtime(other_dir, n_ctx=256) as other:
        r = compare(hf, other, "The lighthouse keeper wrote", max_tokens=12)
    assert r.tokens_a != r.tokens_b
    i = r.first_divergence
    assert i is not None and r.tokens_a[:i] == r.tokens_b[:i]
    assert i == min(len(r.tokens_a), len(r.tokens_b)) or r.tokens_a[i] != r.tokens_b[i]
    assert r.divergence_text_a == hf.detokenize(r.tokens_a[: i + 1])[len(hf.detokenize(r.tokens_a[:i])):]
    assert len(r.kld_per_token) == len(r.tokens_a) and r.kld_mean > 0.01


def test_compare_cli_json(tiny_gguf, tiny_gguf_q4):
    out = cli("compare", tiny_gguf, tiny_gguf_q4, "--prompt", "How a refrigerator", "--max-tokens", 8, "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert {"text_a", "text_b", "first_divergence", "kld_mean"} <= set(d)
    assert len(d["tokens_a"]) <= 8 and len(d["kld_per_token"]) == len(d["tokens_a"])


# ---------------------------------------------------------------------------------------------------- chat


def test_chat_streams_stops_and_keeps_history(gguf_f32):
    from engine.runtime.chat import ChatSettings, Conversation

    conv = Conversation(gguf_f32, ChatSettings(system_prompt="Be brief.", temperature=0.0, max_tokens=40))
    pieces = []

    def stop_after_three():
        return len(pieces) >= 3

    reply = conv.send("Tell me about bees.", on_token=pieces.append, cancel=stop_after_three)
    assert conv.last_finish == "cancelled"
    assert len(pieces) == 3 and reply == "".join(pieces)
    assert [m["role"] for m in conv.history] == ["user", "assistant"]

    rendered = gguf_f32.render_chat(conv.messages() + [{"role": "user", "content": "And wasps?"}])
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert f"<|im_start|>assistant\n{reply}<|im_end|>\n" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    conv.send("And wasps?")
    assert [m["role"] for m in conv.history] == ["user", "assistant", "user", "assistant"]
    assert conv.last_finish in ("eos", "length", "stop")
    # Regenerate: the last answer is taken back and given again (greedy: the same words)
    answer = conv.history[-1]["content"]
    assert conv.retry() and conv.history[-1]["role"] == "user"
    prompt = gguf_f32.chat_prompt_ids(conv.messages())
    assert "".join(conv.reply()) == answer and len(conv.history) == 4
    f = conv.last_figures
    assert f.prompt_tokens == len(prompt) and f.context_size == gguf_f32.n_ctx
    assert f.context_used == len(prompt) + f.completion_tokens and f.completion_tokens >= 1


def test_stop_string_ends_generation(gguf_f32):
    ids = gguf_f32.tokenize("The lighthouse keeper wrote")
    full = "".join(gguf_f32.generate(ids, max_tokens=20))
    assert len(full) > 6
    stop = full[3:6]
    cut = "".join(gguf_f32.generate(ids, max_tokens=20, stop=[stop]))
    assert cut == full[: full.find(stop)] and gguf_f32.last_generation.finish_reason == "stop"


def test_chat_template_is_sandboxed():
    from engine.runtime.chat import render_chat_template

    with pytest.raises(NibbleError):
        render_chat_template("{{ ''.__class__.__mro__[1].__subclasses__() }}", [])
    with pytest.raises(NibbleError, match="roles must alternate"):
        render_chat_template("{{ raise_exception('roles must alternate') }}", [])
    out = render_chat_template("{{ messages[0]['content'] | tojson }}", [{"role": "user", "content": "café"}])
    assert out == '"café"'


def test_chat_cli_keeps_going_through_a_session(tiny_gguf):
    out = cli("chat", tiny_gguf, "--max-tokens", 5, "--temperature", 0, input="hello\n/system be nice\nagain\n/exit\n")
    assert out.returncode == 0, out.stderr
    assert "(system prompt set)" in out.stderr
    assert len(out.stdout.splitlines()) >= 2


# ---------------------------------------------------------------------------------------------------- bench


def test_bench_rates_are_tokens_over_the_measured_seconds(gguf_q4, monkeypatch):
    """tokens/s is exactly the tokens each timed run decoded over the seconds it took; the warm-up is left out."""
    import statistics

    from engine.analysis.bench import bench

    runs = {"pp": [], "tg": []}
    for key, attr in (("pp", "time_prompt"), ("tg", "time_generation")):
        real = getattr(gguf_q4, attr)

        def timed(ids, real=real, key=key):
            seconds = real(ids)
            runs[key].append((len(ids), seconds))
            return seconds

        monkeypatch.setattr(gguf_q4, attr, timed)
    r = bench(gguf_q4, n_prompt=32, n_gen=8, repetitions=3)
    assert [n for n, _ in runs["pp"]] == [32] * 4 and [n for n, _ in runs["tg"]] == [8] * 4  # warm-up + 3
    for key, samples, mean, std in (("pp", r.pp_samples, r.pp_tokens_per_s, r.pp_std),
                                    ("tg", r.tg_samples, r.tg_tokens_per_s, r.tg_std)):
        rates = [n / sec for n, sec in runs[key][1:]]
        assert samples == pytest.approx(rates, rel=1e-12), key
        assert mean == pytest.approx(sum(rates) / len(rates), rel=1e-12), key
        assert std == pytest.approx(statistics.stdev(rates), rel=1e-9), key
    assert r.ttft_s > 0
    assert r.rss_bytes > 0 and r.peak_rss_bytes >= r.rss_bytes // 2
    assert r.vram_bytes is None  # CPU run


class _ClockRuntime:
    """A stand-in model whose runs take the seconds it is told, so the arithmetic can be checked exactly."""

    kind, device, path, name, n_vocab, n_ctx, add_bos, bos_id, threads = (
        "gguf", "cpu", pathlib.Path("x.gguf"), "x.gguf", 50, 1024, True, 1, 2)

    def __init__(self, pp_seconds, tg_seconds):
        self.pp, self.tg = list(pp_seconds), list(tg_seconds)

    def time_prompt(self, ids):
        return self.pp.pop(0)

    def time_generation(self, ids):
        return self.tg.pop(0)

    def reset(self):
        pass

    def _prefill(self, ids):
        return np.zeros(self.n_vocab, np.float32)

    def detokenize(self, ids):
        return ""


def test_bench_arithmetic_on_known_times():
    from engine.analysis.bench import bench

    # warm-up, then two runs: 512 tokens in 0.5 s and 0.25 s -> 1024 and 2048 tokens/s, mean 1536,
    # sample standard deviation |2048 - 1024| / sqrt(2) = 724.08; 128 tokens in 2 s and 4 s -> 64 and 32
    rt = _ClockRuntime([9.0, 0.5, 0.25], [9.0, 2.0, 4.0])
    r = bench(rt, n_prompt=512, n_gen=128, repetitions=2)
    assert r.pp_samples == [1024.0, 2048.0] and r.pp_tokens_per_s == 1536.0
    assert r.pp_std == pytest.approx(724.077, abs=1e-3)
    assert r.tg_samples == [64.0, 32.0] and r.tg_tokens_per_s == 48.0
    assert r.tg_std == pytest.approx(22.627, abs=1e-3)


# ---------------------------------------------------------------------------------------------------- stats


_HF_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}


def _original_of(name: str, original: dict, cfg: dict) -> np.ndarray:
    """The transformers tensor a GGUF tensor was made from, rows in the GGUF's order."""
    if name == "token_embd.weight":
        return original["model.embed_tokens.weight"]
    if name == "output.weight":
        return original["lm_head.weight"]
    _, layer, kind, _ = name.split(".")
    w = original[f"model.layers.{layer}.{_HF_NAMES[kind]}.weight"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    if kind in ("attn_q", "attn_k"):
        heads = cfg["num_attention_heads"] if kind == "attn_q" else cfg["num_key_value_heads"]
        w = w[_interleaved_rows(heads, head_dim)]
    return w


def test_stats_histograms_and_errors_equal_numpy(tiny_llama_dir, tiny_gguf_q4):
    """Every figure of the Analysis view, recomputed here from the two files with numpy."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    from engine.analysis.stats import compute_stats

    class Progress(Reporter):
        seen: list = []

        def progress(self, done, total, message="", **extra):
            self.seen.append((done, total, message))

    bins = 32
    progress = Progress()
    report = compute_stats(tiny_llama_dir, tiny_gguf_q4, bins=bins, reporter=progress)
    n = len(report.tensors)
    assert progress.seen == [(i + 1, n, t.name) for i, t in enumerate(report.tensors)]  # one a tensor, named
    assert report.tensors[0].layer == 0  # block tensors first, for a quick first view
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    quantized = {t.name: t for t in GGUFReader(str(tiny_gguf_q4)).tensors}
    expected_names = sorted(n for n, t in quantized.items() if t.tensor_type.name != "F32")
    assert sorted(t.name for t in report.tensors) == expected_names
    layers: dict = {}
    for s in report.tensors:
        q = quantized[s.name]
        deq = dequantize(q.data, q.tensor_type).astype(np.float64)
        w = _original_of(s.name, original, cfg).astype(np.float64)
        err = deq - w
        assert s.n_elements == w.size and s.qtype == q.tensor_type.name
        assert s.bits_per_weight == pytest.approx(8 * int(q.n_bytes) / w.size, rel=1e-12)
        assert s.rmse == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-9)
        assert s.max_abs_error == pytest.approx(np.abs(err).max(), rel=1e-9)
        assert s.relative_error == pytest.approx(np.linalg.norm(err) / np.linalg.norm(w), rel=1e-9)
        assert s.cosine == pytest.approx((deq * w).sum() / np.linalg.norm(deq) / np.linalg.norm(w), rel=1e-9)
        # histograms: equal-width bins from the smallest to the largest weight, and over +-(largest error)
        counts, edges = np.histogram(w, bins=bins, range=(w.min(), w.max()))
        assert s.weight_hist.counts == counts.tolist(), s.name
        assert s.weight_hist.edges == pytest.approx(edges.tolist(), rel=1e-12)
        emax = np.abs(err).max()
        assert s.error_hist.counts == np.histogram(err, bins=bins, range=(-emax, emax))[0].tolist(), s.name
        acc = layers.setdefault(s.layer, {"n": 0, "e2": 0.0, "w2": 0.0, "bits": 0.0, "cos": []})
        acc["n"] += w.size
        acc["e2"] += float((err**2).sum())
        acc["w2"] += float((w**2).sum())
        acc["bits"] += 8 * int(q.n_bytes)
        acc["cos"].append(s.cosine)
    assert [row.layer for row in report.layers] == [0, 1, None]
    for row in report.layers:
        acc = layers[row.layer]
        assert row.n_elements == acc["n"]
        assert row.rmse == pytest.approx(np.sqrt(acc["e2"] / acc["n"]), rel=1e-9)
        assert row.relative_error == pytest.approx(np.sqrt(acc["e2"] / acc["w2"]), rel=1e-9)
        assert row.bits_per_weight == pytest.approx(acc["bits"] / acc["n"], rel=1e-9)
        assert row.min_cosine == min(acc["cos"])
    q4 = [t for t in report.tensors if t.qtype == "Q4_0"]
    assert q4 and all(t.bits_per_weight == pytest.approx(4.5) for t in q4)  # 18 bytes a block of 32
    total_bits = sum(8 * int(quantized[t.name].n_bytes) for t in report.tensors)
    assert report.bits_per_weight == pytest.approx(total_bits / sum(t.n_elements for t in report.tensors))
    assert report.worst[0] == max(report.tensors, key=lambda t: t.relative_error).name


def _interleaved_rows(n_head: int, head_dim: int) -> list[int]:
    """Which transformers row each row of a GGUF llama q/k matrix holds. transformers rotates dimension i of a
    head together with dimension i + head_dim/2 (rotate-half); llama.cpp rotates dimension 2i with 2i + 1.
    So GGUF row 2i + j of head h is transformers' row j * head_dim/2 + i of that head."""
    half = head_dim // 2
    return [h * head_dim + j * half + i for h in range(n_head) for i in range(half) for j in range(2)]


def test_stats_undoes_the_rotary_row_order_of_q_and_k(tiny_llama_dir, tiny_gguf):
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from engine.analysis.stats import iter_stats

    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    written = {t.name: np.asarray(t.data) for t in GGUFReader(str(tiny_gguf)).tensors}
    for layer in range(cfg["num_hidden_layers"]):
        for gguf_name, hf_name, heads in (("attn_q", "q_proj", cfg["num_attention_heads"]),
                                          ("attn_k", "k_proj", cfg["num_key_value_heads"])):
            hf = original[f"model.layers.{layer}.self_attn.{hf_name}.weight"]
            rows = _interleaved_rows(heads, head_dim)
            np.testing.assert_array_equal(written[f"blk.{layer}.{gguf_name}.weight"], hf[rows])
    attn = [s for s in iter_stats(tiny_llama_dir, tiny_gguf) if "attn_q" in s.name or "attn_k" in s.name]
    assert len(attn) == 4 and all(s.rmse == 0.0 for s in attn)


def _awq_pack(v: np.ndarray) -> np.ndarray:
    """AutoAWQ GEMM packing, written out plainly: nibble i of each int32 holds column order[i] of its 8."""
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    out = np.zeros((v.shape[0], v.shape[1] // 8), dtype=np.int64)
    for j in range(v.shape[1] // 8):
        for i, c in enumerate(order):
            out[:, j] |= v[:, j * 8 + c].astype(np.int64) << (4 * i)
    return out.astype(np.uint32).view(np.int32)


AWQ_GROUP = 64


@pytest.fixture(scope="module")
def awq_checkpoint(tiny_llama_dir, tmp_path_factory):
    """A 4-bit round-to-nearest checkpoint of the tiny model in AutoAWQ's GEMM layout, packed here plainly,
    with the dequantized weights numpy expects for each quantized layer."""
    import shutil

    import torch
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    group = AWQ_GROUP
    original = load_file(str(tiny_llama_dir / "model.safetensors"))
    out, expected = {}, {}
    for name, w in original.items():
        if not (name.endswith("_proj.weight") and w.ndim == 2):
            out[name] = torch.from_numpy(w.astype(np.float16))
            continue
        wt = w.T.astype(np.float64)  # [in, out]
        g = wt.reshape(-1, group, wt.shape[1])
        lo, hi = g.min(axis=1), g.max(axis=1)
        scale = np.maximum(hi - lo, 1e-8) / 15
        zero = np.clip(np.round(-lo / scale), 0, 15)
        q = np.clip(np.round(g / scale[:, None]) + zero[:, None], 0, 15).reshape(wt.shape).astype(np.int64)
        scale16 = scale.astype(np.float16)
        prefix = name[: -len(".weight")]
        out[f"{prefix}.qweight"] = torch.from_numpy(np.ascontiguousarray(_awq_pack(q)))
        out[f"{prefix}.qzeros"] = torch.from_numpy(np.ascontiguousarray(_awq_pack(zero.astype(np.int64))))
        out[f"{prefix}.scales"] = torch.from_numpy(np.ascontiguousarray(scale16))
        deq = (q.reshape(g.shape) - zero[:, None]) * scale16.astype(np.float64)[:, None]
        expected[prefix] = (deq.reshape(wt.shape).T, w.astype(np.float64))
    awq = tmp_path_factory.mktemp("awq") / "model"
    awq.mkdir()
    save_file(out, str(awq / "model.safetensors"))
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                                  "version": "gemm"}
    (awq / "config.json").write_text(json.dumps(cfg))
    for f in tiny_llama_dir.glob("tokenizer*"):
        shutil.copy(f, awq / f.name)
    return awq, expected


def test_stats_of_an_awq_checkpoint(tiny_llama_dir, awq_checkpoint):
    from engine.analysis.stats import compute_stats

    awq, expected = awq_checkpoint
    group = AWQ_GROUP
    report = compute_stats(tiny_llama_dir, awq)
    assert report.format == "awq" and len(report.tensors) == len(expected) == 14
    for t in report.tensors:
        deq, w = expected[t.name]
        assert t.rmse == pytest.approx(np.sqrt(np.mean((deq - w) ** 2)), rel=1e-5)
        assert t.max_abs_error == pytest.approx(np.abs(deq - w).max(), rel=1e-5)
        assert sum(t.error_hist.counts) == w.size
        # 4 bits plus an fp16 scale and a 4-bit zero per 64 weights
        assert t.bits_per_weight == pytest.approx(4 + 16 / group + 4 / group)


def test_eval_original_against_awq(hf, awq_checkpoint, gguf_q4, text):
    from engine.analysis.evaluate import evaluate
    from engine.runtime import model_kind, open_runtime

    awq, _ = awq_checkpoint
    assert model_kind(awq) == "awq"
    with open_runtime(awq, n_ctx=256) as rt:
        assert rt.kind == "awq"
        r = evaluate(hf, rt, text, ctx=CTX, max_chunks=4)
    assert 0 < r.kld_mean < 1.0 and 0 < r.top1_agreement <= 1
    assert r.ppl_reference == pytest.approx(evaluate(hf, gguf_q4, text, ctx=CTX, max_chunks=4).ppl_reference)
