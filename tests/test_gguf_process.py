"""A GGUF model in a child process (engine.runtime.process) behaves as the same model in this process.

GPU builds of llama.cpp run GGUFs this way beside torch; here the child is forced with
``NIBBLE_GGUF_PROCESS=1`` so the path is exercised on a CPU build too.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest


from engine.core.errors import NibbleError

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def both(tiny_gguf, monkeypatch):
    from engine.runtime.process import GGUFProcessRuntime
    from engine.runtime import GGUFRuntime

    local = GGUFRuntime(tiny_gguf, n_ctx=128)
    child = GGUFProcessRuntime(tiny_gguf, n_ctx=128)
    yield local, child
    local.close()
    child.close()


def test_child_gives_the_same_tokens_logits_and_replies(both):
    local, child = both
    assert child.pid != os.getpid()
    for attr in ("n_vocab", "n_ctx", "bos_id", "eos_ids", "add_bos", "chat_template", "bos_token", "eos_token"):
        assert getattr(child, attr) == getattr(local, attr), attr
    text = "The quick brown fox jumps over the lazy dog."
    ids = local.tokenize(text)
    assert child.tokenize(text) == ids
    assert child.detokenize(ids) == local.detokenize(ids)
    assert [child.token_text(i) for i in range(20)] == [local.token_text(i) for i in range(20)]
    np.testing.assert_array_equal(child.logits(ids, start=3), local.logits(ids, start=3))
    a = list(local.generate_tokens(ids, max_tokens=12, temperature=0.0))
    b = list(child.generate_tokens(ids, max_tokens=12, temperature=0.0))
    assert a and b == a


def test_errors_in_the_child_arrive_as_one_line(both):
    _, child = both
    with pytest.raises(NibbleError, match="do not fit the context"):
        child.logits(list(range(1, 600)))
    assert child.tokenize("still answers") == both[0].tokenize("still answers")


def test_a_crashed_child_is_reported_not_hung(both):
    _, child = both
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(NibbleError, match="llama.cpp stopped"):
        child.logits([1, 2, 3])
    child.close()  # closing after a crash is quiet


def test_close_ends_the_child(tiny_gguf):
    from engine.runtime.process import GGUFProcessRuntime

    rt = GGUFProcessRuntime(tiny_gguf, n_ctx=64)
    proc = rt._proc
    rt.close()
    assert proc.poll() is not None


def test_a_bad_file_fails_in_the_child_with_the_usual_line(tmp_path):
    from engine.runtime.process import GGUFProcessRuntime

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(NibbleError, match="broken.gguf"):
        GGUFProcessRuntime(bad, n_ctx=64)


def test_choice_of_process(monkeypatch):
    from engine.core import llama as llama_first

    monkeypatch.setenv("NIBBLE_GGUF_PROCESS", "1")
    assert llama_first.needs_own_process()
    monkeypatch.setenv("NIBBLE_GGUF_PROCESS", "0")
    assert not llama_first.needs_own_process(share_with_torch=True)
    monkeypatch.delenv("NIBBLE_GGUF_PROCESS")
    if not llama_first.gpu_build():  # CPU builds share a process with anything
        assert not llama_first.needs_own_process(share_with_torch=True)
    else:
        assert llama_first.needs_own_process(share_with_torch=True)


def test_eval_cli_figures_match_in_and_out_of_process(tiny_gguf, tiny_gguf_q4):
    def run(flag):
        env = dict(os.environ, NIBBLE_GGUF_PROCESS=flag)
        p = subprocess.run([sys.executable, "-m", "engine", "eval", str(tiny_gguf), str(tiny_gguf_q4), "--ctx", "64",
                            "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    inside, outside = run("0"), run("1")
    assert outside["kld"] == inside["kld"]
    assert outside["candidate"]["ppl"] == inside["candidate"]["ppl"]
    assert outside["top1_agreement"] == inside["top1_agreement"]


def test_facts_about_the_build_come_from_a_child_that_loads_llama_first():
    p = subprocess.run([sys.executable, "-m", "engine.core.llama"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert facts["ftypes"]["LLAMA_FTYPE_MOSTLY_Q4_K_M"] == 15
    assert facts["version"] and facts["error"] is None and "CPU" in facts["registered_backends"]
    from engine.core.llama import llama_facts

    assert llama_facts()["ftypes"] == facts["ftypes"]


def test_cli_process_keeps_llama_out_on_gpu_builds(monkeypatch):
    """The CLI loads llama.cpp itself only where that is safe; quant types are known either way."""
    code = ("import sys; from engine.core import llama as llama_first; llama_first.gpu_build = lambda: True\n"
            "from engine.gguf.quantize import find_type; print(find_type('q4_k_m').ftype, 'llama_cpp' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["15", "False"], p.stdout + p.stderr
