"""Quality along the context (``nibble eval --ctx-sweep``) and with a quantized KV cache (``--kv-type``),
on the tiny float32 Llama, its F32 GGUF and its Q4_0 GGUF."""

from __future__ import annotations

import csv
import io
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from clitools import one_error_line
from eval_models import EVAL_TEXT

ROOT = pathlib.Path(__file__).resolve().parent.parent
LENGTHS = [32, 64]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def text():
    return EVAL_TEXT.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf(tiny_llama_dir):
    from engine.runtime import open_runtime

    with open_runtime(tiny_llama_dir, n_ctx=128) as rt:
        yield rt


@pytest.fixture(scope="module")
def q4(tiny_gguf_q4):
    from engine.runtime import open_runtime

    with open_runtime(tiny_gguf_q4, n_ctx=128) as rt:
        yield rt


@pytest.fixture(scope="module")
def sweep(hf, q4, text):
    from engine.analysis.sweep import context_sweep

    return context_sweep(hf, q4, LENGTHS, text, max_windows=3)


def _log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_each_length_equals_a_plain_evaluation_at_that_context(sweep, hf, q4, text):
    from engine.analysis.evaluate import evaluate

    assert sweep.lengths == LENGTHS
    for point in sweep.points:
        plain = evaluate(hf, q4, text, ctx=point.ctx, max_chunks=3)
        assert point.chunks == plain.chunks == 3
        assert point.tokens == plain.tokens == 3 * (point.ctx - 1 - point.ctx // 2)
        assert point.kld_mean == pytest.approx(plain.kld_mean, rel=1e-6)
        assert point.top1_agreement == plain.top1_agreement
        assert point.ppl_candidate == pytest.approx(plain.ppl_candidate, rel=1e-6)
        assert point.kld_mean > 0


def test_kld_by_position_matches_numpy_on_both_models_logits(sweep, hf, q4, text):
    """Every position of the longest windows, binned: the same figures as a direct computation."""
    ctx = LENGTHS[-1]
    toks = hf.tokenize(text)
    kld, same = [], []
    for i in range(3):
        w = [hf.bos_id] + toks[i * ctx + 1:(i + 1) * ctx]
        lp, lq = _log_softmax(hf.logits(w)[:-1]), _log_softmax(q4.logits(w)[:-1])
        kld.append(np.maximum((np.exp(lp) * (lp - lq)).sum(-1), 0))
        same.append(lp.argmax(-1) == lq.argmax(-1))
    kld, same = np.stack(kld), np.stack(same)  # [window, position]
    bins = sweep.positions
    assert bins[0].start == 0 and bins[-1].end == ctx - 1
    assert sum(b.tokens for b in bins) == 3 * (ctx - 1)
    for b in bins:
        assert b.kld_mean == pytest.approx(float(kld[:, b.start:b.end].mean()), rel=1e-6)
        assert b.top1_agreement == pytest.approx(float(same[:, b.start:b.end].mean()))


def test_quantized_kv_cache_costs_more_as_it_gets_coarser(tiny_llama_dir, tiny_gguf, text):
    """The F32 GGUF against the original: an f16 cache is nearly free, q8_0 costs something, q4_0 more."""
    from engine.analysis.evaluate import evaluate
    from engine.runtime import open_runtime

    kld = {}
    with open_runtime(tiny_llama_dir, n_ctx=128) as ref:
        for kv in ("f16", "q8_0", "q4_0"):
            with open_runtime(tiny_gguf, n_ctx=128, kv_type=kv) as cand:
                assert cand.kv_type == kv
                kld[kv] = evaluate(ref, cand, text, ctx=64, max_chunks=4).kld_mean
    assert 0 < kld["q8_0"] < kld["q4_0"]
    assert kld["f16"] < kld["q8_0"]


def test_cli_sweep_json_and_csv_agree(tiny_gguf, tiny_gguf_q4, tmp_path):
    out = tmp_path / "sweep.csv"
    r = cli("eval", tiny_gguf, tiny_gguf_q4, "--ctx-sweep", "64,32", "--chunks", 2, "--kv-type", "q8_0",
            "--json", "--csv", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [p["ctx"] for p in d["lengths"]] == LENGTHS and d["kv_type"] == "q8_0"
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    lengths = [row for row in rows if row["what"] == "length"]
    assert [int(row["ctx"]) for row in lengths] == LENGTHS
    for row, p in zip(lengths, d["lengths"]):
        assert float(row["kld_mean"]) == p["kld_mean"] and int(row["tokens"]) == p["tokens"]
    positions = [row for row in rows if row["what"] == "position"]
    assert len(positions) == len(d["positions"]["bins"]) > 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_refuses_bad_sweeps_and_kv_types_in_one_line(tiny_gguf, tiny_gguf_q4, tiny_llama_dir):
    trained = json.loads((tiny_llama_dir / "config.json").read_text())["max_position_embeddings"]
    one_error_line(cli("eval", tiny_gguf, tiny_gguf_q4, "--ctx-sweep", f"32,{2 * trained}"), "--ctx", str(trained))
    one_error_line(cli("eval", tiny_gguf, tiny_gguf_q4, "--ctx-sweep", "32,abc"), "--ctx", "abc")
    one_error_line(cli("eval", tiny_gguf, tiny_gguf_q4, "--kv-type", "q3_x", "--chunks", 1), "--kv-type", "q8_0")
    one_error_line(cli("eval", tiny_gguf, tiny_llama_dir, "--kv-type", "q8_0", "--chunks", 1), "--kv-type", "GGUF")


def test_small_klds_print_in_scientific_notation():
    from engine.core.units import format_kld

    assert format_kld(3.2e-5) == "3.20e-05" and float(format_kld(3.2e-5)) == pytest.approx(3.2e-5)
    assert format_kld(0.01234) == "0.0123"
    assert format_kld(0.0) == "0" and format_kld(None) == "—"


def test_the_app_gets_the_same_sweep_through_its_services(sweep, tiny_llama_dir, tiny_gguf_q4):
    from app import services
    from engine.core.progress import Reporter

    r = services.run_context_sweep(str(tiny_llama_dir), str(tiny_gguf_q4), LENGTHS, Reporter(), max_windows=3)
    assert [p.kld_mean for p in r.points] == pytest.approx([p.kld_mean for p in sweep.points], rel=1e-6)
    assert r.kv_type == "f16" and len(r.positions) == len(sweep.positions)
