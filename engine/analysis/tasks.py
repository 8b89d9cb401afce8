"""The demo model's task score: held-out questions asked through any chat, answers checked exactly.

``score_task(generate)`` asks held-out questions (:mod:`engine.models.demo_questions`) through any chat callable
(a GGUF in llama.cpp, a Hugging Face or AWQ model through :func:`runtime_chat`) and scores exact match on
the answer at the end of each reply, so quantization damage shows as wrong answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from engine.core.progress import Reporter
from engine.models.demo_questions import CATEGORIES, CATEGORY_LABELS, Question, heldout_questions, question_messages

_NUMBER = re.compile(r"-?\d+")
_WORD = re.compile(r"[a-z]+")


def extract_answer(reply: str, numeric: bool) -> str:
    """The answer a reply gives: its last number (thousands separators ignored), or its last word."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", reply)
    if numeric:
        nums = _NUMBER.findall(text)
        return str(int(nums[-1])) if nums else ""
    words = _WORD.findall(text.lower())
    return words[-1] if words else ""


def answer_matches(answer: str, reply: str) -> bool:
    """Whether ``reply`` gives ``answer``: its last number equals a numeric answer; otherwise its last words,
    case aside, are the answer's words ("The capital of France is Paris." gives "paris")."""
    answer = answer.strip()
    if answer.lstrip("-").isdigit():
        return extract_answer(reply, True) == str(int(answer))
    want = _WORD.findall(answer.lower())
    got = _WORD.findall(reply.lower())
    return bool(want) and got[-len(want):] == want


def is_correct(q: Question, reply: str) -> bool:
    return answer_matches(q.answer, reply)


@dataclass
class CategoryScore:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class ScoredItem:
    question: Question
    reply: str
    correct: bool


@dataclass
class TaskScore:
    """Exact-match accuracy on held-out demo questions, overall and by category."""

    per_category: dict[str, CategoryScore]
    items: list[ScoredItem] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(c.correct for c in self.per_category.values())

    @property
    def total(self) -> int:
        return sum(c.total for c in self.per_category.values())

    @property
    def overall(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def summary(self) -> str:
        parts = [f"{self.overall:.0%} overall ({self.correct}/{self.total})"]
        for name, c in self.per_category.items():
            parts.append(f"{CATEGORY_LABELS[name]} {c.accuracy:.0%}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {
            "overall": self.overall,
            "correct": self.correct,
            "total": self.total,
            "per_category": {
                k: {"accuracy": c.accuracy, "correct": c.correct, "total": c.total, "label": CATEGORY_LABELS[k]}
                for k, c in self.per_category.items()
            },
        }


def score_answers(questions: list[Question], replies: list[str]) -> TaskScore:
    """Score replies already produced for ``questions`` (for runtimes that answer in batches)."""
    score = TaskScore({c: CategoryScore() for c in CATEGORIES})
    for q, reply in zip(questions, replies, strict=True):
        _add(score, q, reply)
    return score


def _add(score: TaskScore, q: Question, reply: str) -> bool:
    ok = is_correct(q, reply)
    cat = score.per_category[q.category]
    cat.total += 1
    cat.correct += ok
    score.items.append(ScoredItem(q, reply, ok))
    return ok


def score_task(
    generate: Callable[[list[dict]], str],
    n: int = 200,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> TaskScore:
    """Ask ``n`` held-out questions through ``generate(messages) -> reply`` and score exact match.

    ``generate`` gets ``[{"role": "user", "content": question}]`` and returns the assistant's reply
    (greedy decoding is what makes scores comparable between quantizations).
    """
    reporter = reporter or Reporter()
    score = TaskScore({c: CategoryScore() for c in CATEGORIES})
    questions = heldout_questions(n, seed)
    for i, q in enumerate(questions):
        reporter.check_cancel()
        _add(score, q, generate(question_messages(q)))
        reporter.progress(i + 1, len(questions), f"demo task: {score.correct}/{i + 1} right")
    return score



def runtime_chat(runtime, max_tokens: int = 32) -> Callable[[list[dict]], str]:
    """A greedy ``generate(messages) -> reply`` over any Nibble runtime (GGUF, Hugging Face, AWQ)."""

    def generate(messages: list[dict]) -> str:
        ids = runtime.chat_prompt_ids(messages)
        return "".join(piece for _, piece in runtime.generate_tokens(ids, max_tokens=max_tokens, temperature=0.0))

    return generate
