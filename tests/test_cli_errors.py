"""Errors a user can cause, through the CLI: exit 2 and one line on stderr that names the file or the setting
and says what to do. (The quantize, inspect, estimate and hub paths are checked in their own modules.)"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from clitools import one_error_line
from eval_models import build_tiny_llama

ROOT = pathlib.Path(__file__).resolve().parent.parent


def nibble(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def other_vocab(tmp_path_factory):
    """A model with a tokenizer of the same size but other tokens."""
    return build_tiny_llama(tmp_path_factory.mktemp("qwen") / "qwen", family="qwen2", hidden=64, intermediate=128)


def test_eval_settings_and_text(tiny_gguf, tiny_gguf_q4, tmp_path):
    one_error_line(nibble("eval", tiny_gguf, tiny_gguf_q4, "--ctx", 4), "--ctx: context length 4", "use at least 8")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 cr\xe8me ".encode("latin-1") * 200)
    one_error_line(nibble("eval", tiny_gguf, tiny_gguf_q4, "--text", bad), "latin1.txt", "not UTF-8")
    one_error_line(nibble("eval", tiny_gguf, tmp_path / "missing.gguf"), "missing.gguf", "no such file")


def test_compare_refuses_other_vocabularies(tiny_llama_dir, other_vocab):
    one_error_line(nibble("compare", tiny_llama_dir, other_vocab, "--prompt", "Hello"),
                   "different vocabularies", "share one tokenizer")


def test_stats_needs_a_quantized_model(tiny_llama_dir):
    one_error_line(nibble("stats", tiny_llama_dir, tiny_llama_dir), str(tiny_llama_dir), "is not quantized")


def test_bench_runs_longer_than_the_context(tiny_gguf_q4):
    one_error_line(nibble("bench", tiny_gguf_q4, "-p", 600, "--ctx", 64),
                   "--ctx: a 600-token run (prompt length 600", "raise the context length")


def test_quantize_output_choices(tiny_llama_dir, tiny_gguf, tmp_path):
    one_error_line(nibble("quantize", tiny_llama_dir, "--type", "Q4_K_M", "--out", tmp_path / "x.txt"),
                   "x.txt", "must end in .gguf")
    one_error_line(nibble("quantize", tiny_llama_dir, "--type", "Q4_K_M", "--imatrix", tmp_path / "none.dat",
                          "--out", tmp_path / "x.gguf"), "none.dat", "file not found")
    one_error_line(nibble("quantize", tiny_gguf, "--type", "Q4_K_M", "--out", tiny_gguf),
                   f"--out: output path {tiny_gguf} is an input of this job", "choose another name")
    assert list(tmp_path.iterdir()) == []


def test_engine_messages_name_settings_in_words():
    """The engine says "sample length", never "--seqlen": the CLI adds its option, the app its field label."""
    import re

    from engine.commands.cli import FLAGS
    from engine.core.errors import SETTINGS

    assert set(SETTINGS) <= set(FLAGS), f"settings without a CLI option: {set(SETTINGS) - set(FLAGS)}"
    call = re.compile(r"NibbleError\((?:[^()]|\([^()]*\))*\)")
    flag_in_text = re.compile(r"[\"'][^\"'\n]*(?<![\w-])--[a-z]")
    offenders = [f"{p.relative_to(ROOT)}:{src[:m.start()].count(chr(10)) + 1}"
                 for p in sorted((ROOT / "engine").rglob("*.py")) if "commands" not in p.parts
                 for src in [p.read_text(encoding="utf-8")] for m in call.finditer(src)
                 if flag_in_text.search(re.sub(r"nibble [a-z]+[^\"']*", "", m.group(0)))]  # a command to copy is fine
    assert offenders == []


def test_a_setting_named_by_the_engine_gets_its_option():
    res = nibble("estimate", "demo", "--target-size", "1KB")
    one_error_line(res, "--target-size: target size 1KB is outside what a mix of this model can be")
