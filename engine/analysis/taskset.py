"""Compare two models on a task set: both answer every question (greedy), accuracy side by side, the
questions where the answers differ, and along each of the original's answers the quantized model's KL
divergence at every token (the data of a heat strip).

The task set is the demo's held-out questions by default, or a JSONL file of ``{"prompt": ..., "answer": ...}``
lines (``"category"`` optional). Each question is asked as one user turn in the first model's chat template;
an answer is right when the reply ends in it (:func:`engine.analysis.tasks.answer_matches`).
"""

from __future__ import annotations

import json
import pathlib
import time
from dataclasses import asdict, dataclass, field

from engine.analysis.compare import compare, token_pieces
from engine.analysis.tasks import CategoryScore, answer_matches
from engine.core.errors import NibbleError
from engine.core.progress import Reporter
from engine.runtime import Runtime

DEMO_TASKS = "the demo's held-out questions"


@dataclass(frozen=True)
class TaskItem:
    prompt: str
    answer: str
    category: str = ""


@dataclass
class TaskAnswer:
    """One question, both replies, and the candidate's divergence along the reference's reply."""

    prompt: str
    answer: str
    category: str
    reply_a: str
    reply_b: str
    correct_a: bool
    correct_b: bool
    tokens_a: list[int] = field(default_factory=list)  # the reference's reply, token by token
    pieces_a: list[str] = field(default_factory=list)  # their text, for labelling a heat strip
    kld_per_token: list[float] = field(default_factory=list)  # KL(A || B) at each of those tokens
    kld_mean: float = 0.0
    top1_agreement: float = 1.0
    first_divergence: int | None = None  # index of the first differing token; None when the replies are equal

    @property
    def differs(self) -> bool:
        return self.first_divergence is not None


@dataclass
class TaskCompareResult:
    a: str
    b: str
    task_name: str
    items: list[TaskAnswer]
    seconds: float = 0.0

    def score(self, side: str, category: str | None = None) -> CategoryScore:
        chosen = [i for i in self.items if category is None or i.category == category]
        return CategoryScore(sum(getattr(i, f"correct_{side}") for i in chosen), len(chosen))

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(i.category for i in self.items if i.category))

    @property
    def differing(self) -> list[TaskAnswer]:
        return [i for i in self.items if i.differs]

    def to_json(self) -> dict:
        def side(s: CategoryScore) -> dict:
            return {"accuracy": s.accuracy, "correct": s.correct, "total": s.total}

        return {
            "a": self.a, "b": self.b, "tasks": self.task_name, "seconds": self.seconds,
            "accuracy": {"a": side(self.score("a")), "b": side(self.score("b"))},
            "per_category": {c: {"a": side(self.score("a", c)), "b": side(self.score("b", c))} for c in self.categories},
            "differing": len(self.differing),
            "items": [asdict(i) for i in self.items],
        }


def demo_tasks(n: int = 100, seed: int = 0) -> list[TaskItem]:
    from engine.models.demo_questions import CATEGORY_LABELS, heldout_questions

    return [TaskItem(q.text, q.answer, CATEGORY_LABELS[q.category]) for q in heldout_questions(n, seed)]


def read_tasks(path: str | pathlib.Path) -> list[TaskItem]:
    """A JSONL task set: one ``{"prompt": ..., "answer": ...}`` object a line; refuses a bad line in one line."""
    p = pathlib.Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise NibbleError(f"task file {p} does not exist", setting="task file") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise NibbleError(f"task file {p} is not a UTF-8 JSONL file", setting="task file") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise NibbleError(f"task file {p}, line {n}: not JSON; write one "
                              '{"prompt": ..., "answer": ...} object a line', setting="task file") from None
        if not isinstance(d, dict) or not str(d.get("prompt", "")).strip() or not str(d.get("answer", "")).strip():
            raise NibbleError(f"task file {p}, line {n}: needs a non-empty \"prompt\" and \"answer\"",
                              setting="task file")
        items.append(TaskItem(str(d["prompt"]), str(d["answer"]).strip(), str(d.get("category", ""))))
    if not items:
        raise NibbleError(f"task file {p} holds no questions", setting="task file")
    return items


def compare_tasks(a: Runtime, b: Runtime, items: list[TaskItem], *, task_name: str = "the task set",
                  max_tokens: int = 32, reporter: Reporter | None = None) -> TaskCompareResult:
    """Ask every question of ``items`` to both models (greedy, chat template of ``a``) and score them."""
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    answers: list[TaskAnswer] = []
    reporter.progress(0, len(items), "task set")
    for n, item in enumerate(items, 1):
        reporter.check_cancel()
        r = compare(a, b, item.prompt, max_tokens=max_tokens, chat=True, cancel=reporter.is_cancelled)
        reply_a, reply_b = r.text_a.strip(), r.text_b.strip()
        answers.append(TaskAnswer(
            prompt=item.prompt, answer=item.answer, category=item.category, reply_a=reply_a, reply_b=reply_b,
            correct_a=answer_matches(item.answer, reply_a), correct_b=answer_matches(item.answer, reply_b),
            tokens_a=r.tokens_a, pieces_a=token_pieces(a, r.tokens_a), kld_per_token=r.kld_per_token,
            kld_mean=r.kld_mean, top1_agreement=r.top1_agreement, first_divergence=r.first_divergence,
        ))
        right_a = sum(x.correct_a for x in answers)
        right_b = sum(x.correct_b for x in answers)
        reporter.progress(n, len(items), f"{right_a}/{n} right vs {right_b}/{n}")
    return TaskCompareResult(str(a.path), str(b.path), task_name, answers, time.perf_counter() - t0)

