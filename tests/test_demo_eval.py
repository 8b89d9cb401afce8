"""`nibble eval` on the demo model: figures on its own held-out dialogues, and the task score a person
reads as "Q2_K gets N% right, the original M%"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_eval_of_the_demo_reports_task_scores(tmp_path):
    from engine.gguf.quantize import quantize

    q2 = quantize("demo", "Q2_K", tmp_path / "demo-Q2_K.gguf").output
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "engine", "eval", "demo", str(q2), "--json", "--chunks", "4",
                        "--task-questions", "24"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kld"]["mean"] > 0
    ref, cand = out["task"]["reference"], out["task"]["candidate"]
    assert ref["total"] == cand["total"] == 24
    assert ref["overall"] >= 0.8, "the original demo model answers most held-out questions right"
    assert set(ref["per_category"]) == {"arithmetic", "conversion", "counting", "facts", "recall"}
    # on its own dialogues the demo model is far from clueless (general English would be in the thousands)
    assert out["reference"]["ppl"] < 20

    plain = subprocess.run([sys.executable, "-m", "engine", "eval", "demo", str(q2), "--chunks", "2",
                            "--task-questions", "8"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert plain.returncode == 0, plain.stderr
    assert "demo task  reference" in plain.stdout and "held-out dialogues" in plain.stdout


def test_eval_between_two_demo_ggufs_uses_the_dialogues_too(tmp_path):
    """A user comparing two quantizations of the demo sees figures on text the model knows, with the chat
    markers read as the special tokens they are, and the same perplexity as the original gives there."""
    from engine.gguf.quantize import quantize

    q8 = quantize("demo", "Q8_0", tmp_path / "demo-Q8_0.gguf").output
    q4 = quantize("demo", "Q4_K_M", tmp_path / "demo-Q4_K_M.gguf").output
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(ref):
        r = subprocess.run([sys.executable, "-m", "engine", "eval", str(ref), str(q4), "--json", "--chunks", "4",
                            "--task", "none"], capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    from_gguf, from_original = run(q8), run("demo")
    assert from_gguf["reference"]["ppl"] < 20
    assert abs(from_gguf["reference"]["ppl"] - from_original["reference"]["ppl"]) < 0.05 * from_original["reference"]["ppl"]
    assert from_gguf["tokens"] == from_original["tokens"]
