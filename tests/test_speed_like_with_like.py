"""Speed and memory like with like: the original is timed on an unquantized GGUF of it (made once, cached)
through llama.cpp, beside a quantized GGUF, and each side says which runtime ran it."""

from __future__ import annotations

import numpy as np


def test_original_is_timed_on_a_cached_unquantized_gguf_of_the_same_model(tiny_llama_dir, tiny_gguf_q4):
    from engine.pipelines.speed import compare_speed, reference_gguf
    from engine.runtime import open_runtime

    r = compare_speed(tiny_llama_dir, tiny_gguf_q4, n_prompt=16, n_gen=8, repetitions=1)
    ref = reference_gguf(tiny_llama_dir)
    assert r.original.model == str(ref) and r.quantized.model == str(tiny_gguf_q4)
    assert r.original.runtime == "llama.cpp (GGUF F32)"  # the tiny model is stored in float32
    assert r.quantized.runtime == "llama.cpp (GGUF Q4_0)"
    for side in (r.original, r.quantized):
        assert side.bench.tg_tokens_per_s > 0 and side.bench.peak_rss_bytes > 0 and side.bench.n_gen == 8
    assert "transformers" in r.note and "F32" in r.note

    made = ref.stat().st_mtime_ns
    assert reference_gguf(tiny_llama_dir) == ref and ref.stat().st_mtime_ns == made  # cached, not remade
    assert not list(ref.parent.glob(".*tmp*"))

    # The cached GGUF is the original: the same logits as transformers on the same tokens.
    with open_runtime(tiny_llama_dir, n_ctx=64) as hf, open_runtime(ref, n_ctx=64) as gg:
        ids = hf.tokenize("The quick brown fox jumps over the lazy dog.")
        a, b = gg.logits(ids), hf.logits(ids)
        assert np.abs(a - b).max() < 2e-2 and (a.argmax(-1) == b.argmax(-1)).all()


def test_a_non_gguf_candidate_keeps_the_original_in_transformers(tiny_llama_dir):
    from engine.pipelines.speed import compare_speed

    r = compare_speed(tiny_llama_dir, tiny_llama_dir, n_prompt=8, n_gen=4, repetitions=1)
    assert r.original.runtime == r.quantized.runtime == "transformers (float32)"
    assert r.original.model == str(tiny_llama_dir)


def test_each_side_reports_its_own_peak_memory_not_its_starters(tiny_gguf_q4):
    """The app holds hundreds of MiB (torch, Qt) when it starts a bench child, and the Compare view showed that
    as both sides' peak memory. With 1 GiB held by the starter (its RSS read with psutil), the child's peak
    for a tiny GGUF must stay far below it."""
    import psutil

    from engine.pipelines.speed import bench_in_child

    ballast = np.ones(2**27)  # 1 GiB, every page touched
    starter = psutil.Process().memory_info().rss
    assert starter > 2**30
    r = bench_in_child(tiny_gguf_q4, n_prompt=8, n_gen=4, repetitions=1)
    assert 0 < r.peak_rss_bytes < starter / 2, (r.peak_rss_bytes, starter)
    del ballast
