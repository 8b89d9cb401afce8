"""The same prompt through two models, side by side: where do they part ways, and by how much?

Greedy decoding by default, so any difference comes from the weights, not from sampling. The prompt is
tokenized once (by model A) and fed to both. After both have answered, the KL divergence of B against A is
measured along A's answer: at every position of A's output, how far B's next-token distribution is from A's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from engine.analysis.evaluate import token_scores
from engine.core.errors import check_at_least
from engine.runtime import Runtime, check_same_vocab


@dataclass
class CompareResult:
    a: str
    b: str
    prompt_tokens: int
    text_a: str
    text_b: str
    tokens_a: list[int]
    tokens_b: list[int]
    first_divergence: int | None  # index into the generated tokens; None when both outputs are identical
    divergence_text_a: str = ""  # A's token at that index ("" when A's output had already ended)
    divergence_text_b: str = ""
    kld_mean: float = 0.0  # KL(A || B) along A's output
    kld_max: float = 0.0
    kld_per_token: list[float] = field(default_factory=list)
    top1_agreement: float = 1.0  # along A's output: how often B's most likely token is A's
    finish_a: str = ""
    finish_b: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token; the shorter length when one output ends early; None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def token_pieces(rt: Runtime, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded output (so a row of tokens reads as the reply); a token that
    ends in the middle of a character adds "", the one that completes it the whole character."""
    return rt.token_pieces(list(ids))


def _token_at(rt: Runtime, ids: list[int], i: int) -> str:
    if i >= len(ids):
        return ""
    return rt.token_pieces(ids[:i + 1])[-1]


def compare(a: Runtime, b: Runtime, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
            top_p: float = 1.0, seed: int | None = 0, chat: bool = False, system: str | None = None,
            on_token_a: Callable[[str], None] | None = None, on_token_b: Callable[[str], None] | None = None,
            cancel=None) -> CompareResult:
    """Generate from ``prompt`` with both models and measure where and how much B departs from A."""
    check_at_least(max_tokens, 1, "tokens to generate")
    check_same_vocab(a, b)
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = a.chat_prompt_ids(messages)
    else:
        ids = a.tokenize(prompt, add_bos=a.add_bos, special=False)
    outs = []
    for rt, cb in ((a, on_token_a), (b, on_token_b)):
        text = "".join(rt.generate(ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                   on_token=cb, cancel=cancel, seed=seed))
        outs.append((text, list(rt.last_generation.token_ids), rt.last_generation.finish_reason))
    (text_a, ta, fin_a), (text_b, tb, fin_b) = outs
    div = first_divergence(ta, tb)
    result = CompareResult(a=str(a.path), b=str(b.path), prompt_tokens=len(ids), text_a=text_a, text_b=text_b,
                           tokens_a=ta, tokens_b=tb, first_divergence=div, finish_a=fin_a, finish_b=fin_b)
    if div is not None:
        result.divergence_text_a = _token_at(a, ta, div)
        result.divergence_text_b = _token_at(b, tb, div)
    if ta:
        seq = ids + ta
        start = len(ids) - 1
        la = a.logits(seq, start=start)[:-1]
        lb = b.logits(seq, start=start)[:-1]
        s = token_scores(la, lb, np.asarray(ta))
        result.kld_per_token = [float(x) for x in s["kld"]]
        result.kld_mean = float(s["kld"].mean())
        result.kld_max = float(s["kld"].max())
        result.top1_agreement = float(s["same_top"].mean())
    return result
