"""The demo model through Nibble's GGUF quantizer: KL divergence orders with the type, answers survive."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from engine.analysis import tasks

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location(
        "demo_quant_quality", ROOT / "benchmarks" / "demo_model" / "quant_quality.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    from engine.gguf.quantize import quantize

    out = tmp_path_factory.mktemp("demo_gguf")
    paths = {}
    for t in ("Q8_0", "Q2_K"):
        paths[t] = out / f"demo-{t}.gguf"
        quantize("demo", t, paths[t])
    # The CLI takes the name `demo` too.
    paths["Q4_K_M"] = out / "demo-Q4_K_M.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "quantize", "demo", "--type", "Q4_K_M", "--out", str(paths["Q4_K_M"])],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return paths


def test_kl_divergence_grows_as_bits_shrink(ggufs):
    bench = _bench()
    windows = bench.kld_tokens(n_windows=1, ctx=256)
    ref = bench.reference_logprobs(windows)
    q = {t: bench.gguf_kld(p, windows, ref) for t, p in ggufs.items()}
    assert 0 < q["Q8_0"]["kld"] < q["Q4_K_M"]["kld"] < q["Q2_K"]["kld"], q
    assert q["Q8_0"]["same_top"] >= q["Q4_K_M"]["same_top"] >= q["Q2_K"]["same_top"], q
    sizes = [ggufs[t].stat().st_size for t in ("Q8_0", "Q4_K_M", "Q2_K")]
    assert sizes == sorted(sizes, reverse=True)


def test_q8_gguf_answers_heldout_questions_in_llama_cpp(ggufs):
    bench = _bench()
    score = tasks.score_task(bench.gguf_chat(ggufs["Q8_0"]), n=12, seed=321)
    assert score.overall >= 0.75, [(i.question.text, i.reply) for i in score.items if not i.correct]
