"""``nibble compare A B --tasks``: both models answer a task set; accuracy, differing answers, and the KLD
heat strip along each of A's answers, checked against direct greedy decoding and numpy."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from clitools import one_error_line

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPTS = ["Hello there", "What is the weather like?", "Name a colour.", "Count to three.", "Tell me a story",
           "Why is the sky blue?"]
MAX_TOKENS = 8


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pair(tiny_model, tiny_q2):
    from engine.runtime import open_runtime

    with open_runtime(tiny_model, n_ctx=256) as a, open_runtime(tiny_q2, n_ctx=256) as b:
        yield a, b


def greedy(rt, ids: list[int], max_tokens: int = MAX_TOKENS) -> list[int]:
    """Greedy decoding by hand: argmax of the full logits, token after token."""
    out = []
    for _ in range(max_tokens):
        t = int(np.argmax(rt.logits(ids + out)[-1]))
        if t in rt.eos_ids:
            break
        out.append(t)
    return out


def last_word(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return words[-1] if words else ""


@pytest.fixture(scope="module")
def reference_replies(pair):
    a, b = pair
    replies = {}
    for p in PROMPTS:
        ids = a.chat_prompt_ids([{"role": "user", "content": p}])
        replies[p] = (ids, greedy(a, ids), greedy(b, ids))
    return replies


@pytest.fixture(scope="module")
def task_file(tmp_path_factory, pair, reference_replies):
    """Half the answers are A's own last word (right for A by construction), the rest are never given."""
    a, _ = pair
    lines = []
    for n, p in enumerate(PROMPTS):
        word = last_word(a.detokenize(reference_replies[p][1]))
        answer = word if n % 2 == 0 and word else "xylophonequartz"
        lines.append(json.dumps({"prompt": p, "answer": answer, "category": "even" if n % 2 == 0 else "odd"}))
    path = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def result(pair, task_file):
    from engine.analysis.taskset import compare_tasks, read_tasks

    a, b = pair
    return compare_tasks(a, b, read_tasks(task_file), task_name=str(task_file), max_tokens=MAX_TOKENS)


def test_replies_are_the_greedy_answers_of_each_model(result, pair, reference_replies):
    a, b = pair
    for item in result.items:
        _, ta, tb = reference_replies[item.prompt]
        assert item.tokens_a == ta
        assert item.reply_a == a.detokenize(ta).strip() and item.reply_b == b.detokenize(tb).strip()
        assert len(item.pieces_a) == len(ta)
        if "\ufffd" not in a.detokenize(ta):  # a character split over tokens has no piece of its own
            assert "".join(item.pieces_a) == a.detokenize(ta)
        assert item.differs == (ta != tb)


def test_accuracy_equals_a_direct_count_of_matching_answers(result, task_file):
    answers = [json.loads(line) for line in task_file.read_text().splitlines()]
    want_a = sum(last_word(i.reply_a) == d["answer"] for i, d in zip(result.items, answers))
    want_b = sum(last_word(i.reply_b) == d["answer"] for i, d in zip(result.items, answers))
    assert result.score("a").correct == want_a and result.score("b").correct == want_b
    assert result.score("a").total == len(PROMPTS)
    assert want_a >= 1  # some of A's own last words were asked for
    assert result.score("a", "odd").correct == 0  # nobody says xylophonequartz
    assert result.score("a").accuracy == pytest.approx(want_a / len(PROMPTS))


def test_heat_strip_is_the_per_token_kld_along_a_computed_with_numpy(result, pair, reference_replies):
    a, b = pair

    def log_softmax(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    checked = 0
    for item in result.items:
        ids, ta, _ = reference_replies[item.prompt]
        if not ta:
            continue
        seq = ids + ta
        rows = slice(len(ids) - 1, len(seq) - 1)
        lp, lq = log_softmax(a.logits(seq)[rows]), log_softmax(b.logits(seq)[rows])
        kld = (np.exp(lp) * (lp - lq)).sum(-1)
        assert item.kld_per_token == pytest.approx(list(np.maximum(kld, 0)), rel=1e-4, abs=1e-7)
        assert len(item.kld_per_token) == len(item.pieces_a) == len(ta)
        checked += 1
    assert checked >= 3


def test_cli_lists_differing_answers_and_json_agrees(tiny_model, tiny_q2, task_file, result):
    r = cli("compare", tiny_model, tiny_q2, "--tasks", task_file, "--max-tokens", MAX_TOKENS, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["accuracy"]["a"]["correct"] == result.score("a").correct
    assert d["differing"] == len(result.differing) and len(d["items"]) == len(PROMPTS)
    text = cli("compare", tiny_model, tiny_q2, "--tasks", task_file, "--max-tokens", MAX_TOKENS)
    assert text.returncode == 0, text.stderr
    assert f"answers differ on {len(result.differing)} of {len(PROMPTS)} questions" in text.stdout


def test_bad_task_files_are_refused_in_one_line(tiny_model, tiny_q2, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "answer": "x"}\n{"prompt": "no answer"}\n', encoding="utf-8")
    one_error_line(cli("compare", tiny_model, tiny_q2, "--tasks", bad), "--tasks", "line 2", "answer")
    one_error_line(cli("compare", tiny_model, tiny_q2, "--tasks", tmp_path / "missing.jsonl"), "--tasks",
                   "does not exist")


def test_demo_task_set_is_the_held_out_questions():
    from engine.analysis.taskset import demo_tasks
    from engine.models.demo_questions import heldout_questions

    items = demo_tasks(12)
    assert [(i.prompt, i.answer) for i in items] == [(q.text, q.answer) for q in heldout_questions(12)]
