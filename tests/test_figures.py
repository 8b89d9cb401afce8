"""The quality figures users read, checked against computations that share no code with Nibble.

KL divergence, perplexity, top-token agreement and the first-divergence index are checked twice: on small
distributions worked out by hand (the expected values are written down, with the arithmetic beside them),
and on real models, against numpy run on logits taken straight from transformers (the reference) and from
llama-cpp-python (the candidate), never through Nibble's runtimes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval_models import EVAL_TEXT

from engine.analysis.compare import compare, first_divergence
from engine.analysis.evaluate import evaluate, token_scores
from engine.core.progress import Reporter

CTX = 64
WINDOWS = 4


# ---------------------------------------------------------------------------------------------- by hand


def _logits(probs, shift: float) -> np.ndarray:
    """Logits of the given distributions, shifted so that nothing can pass as already normalised."""
    return np.log(np.asarray(probs, dtype=np.float64)) + shift


def test_kl_divergence_of_a_hand_worked_pair():
    # reference p = [.5, .5], candidate q = [.9, .1]:
    # KL(p || q) = .5 ln(.5/.9) + .5 ln(.5/.1) = .5 ln(25/9) = ln(5/3) = 0.5108 nats
    # (the other direction, KL(q || p) = .9 ln(.9/.5) + .1 ln(.1/.5) = 0.3681, is not what users are shown)
    s = token_scores(_logits([[0.5, 0.5]], 3.0), _logits([[0.9, 0.1]], -1.0), np.array([0]))
    assert s["kld"][0] == pytest.approx(0.5108256, abs=1e-6)


ROWS = [  # reference p, candidate q, the right token
    ([0.6, 0.4], [0.9, 0.1], 1),
    ([0.2, 0.8], [0.6, 0.4], 1),
    ([0.3, 0.7], [0.25, 0.75], 0),
]
# KL(p || q) = sum p ln(p / q)
#   row 0: .6 ln(.6/.9) + .4 ln(.4/.1)   = -0.243279 + 0.554518 = 0.311239
#   row 1: .2 ln(.2/.6) + .8 ln(.8/.4)   = -0.219722 + 0.554518 = 0.334795
#   row 2: .3 ln(.3/.25) + .7 ln(.7/.75) =  0.054697 - 0.048295 = 0.006401
KLD = [0.311239, 0.334795, 0.006401]
NLL_REF = [0.916291, 0.223144, 1.203973]  # -ln .4, -ln .8, -ln .3
NLL_CAND = [2.302585, 0.916291, 1.386294]  # -ln .1, -ln .4, -ln .25
P_DIFF = [-0.3, -0.4, -0.05]  # q[right] - p[right]
SAME_TOP = [True, False, True]  # argmax p vs argmax q: 0/0, 1/0, 1/1 (the right token plays no part)


def test_token_figures_of_hand_worked_rows():
    ref = _logits([p for p, _, _ in ROWS], 2.5)
    cand = _logits([q for _, q, _ in ROWS], -4.0)
    s = token_scores(ref, cand, np.array([t for _, _, t in ROWS]))
    assert s["kld"] == pytest.approx(KLD, abs=1e-6)
    assert s["nll_ref"] == pytest.approx(NLL_REF, abs=1e-6)
    assert s["nll_cand"] == pytest.approx(NLL_CAND, abs=1e-6)
    assert s["p_diff"] == pytest.approx(P_DIFF, abs=1e-9)
    assert list(s["same_top"]) == SAME_TOP


def test_first_divergence_by_hand():
    assert first_divergence([5, 6, 7], [5, 6, 8]) == 2
    assert first_divergence([9], [4]) == 0
    assert first_divergence([1, 2], [1, 2, 3]) == 2  # B went on after A stopped
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None


# ---------------------------------------------------------------------------- numpy on both runtimes


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def transformers_logits(tiny_llama_dir):
    """Logits of the full-precision original, from transformers itself."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()

    def run(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].numpy()

    return run


@pytest.fixture(scope="module")
def llama_logits(tiny_gguf_q4):
    """Logits of the Q4_0 file, from llama-cpp-python itself (flash attention on, as llama.cpp's own tools
    pick on a CPU: without it attention rounds differently and the figures move by a few tenths of a percent)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(tiny_gguf_q4), n_ctx=256, logits_all=True, verbose=False, flash_attn=True)

    def run(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)

    yield run
    llm.close()


def _windows(model_dir, text: str) -> list[list[int]]:
    """llama-perplexity's windows, cut here from the tokenizer's own ids: BOS in place of each first token."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = tok.encode(text).ids
    bos = tok.token_to_id("<|begin_of_text|>")
    assert ids[0] == bos
    return [[bos] + ids[i * CTX + 1:(i + 1) * CTX] for i in range(WINDOWS)]


@pytest.fixture(scope="module")
def by_numpy(tiny_llama_dir, transformers_logits, llama_logits):
    """Per scored token: KLD, both NLLs, same top token and the change in p(right token), in plain numpy."""
    text = EVAL_TEXT.read_text(encoding="utf-8")
    kld, nll_ref, nll_cand, same, dp = [], [], [], [], []
    for w in _windows(tiny_llama_dir, text):
        ref, cand = transformers_logits(w), llama_logits(w)
        for pos in range(CTX // 2, CTX - 1):  # the second half of the window predicts its next token
            lp, lq = _log_softmax(ref[pos]), _log_softmax(cand[pos])
            right = w[pos + 1]
            kld.append(float(np.sum(np.exp(lp) * (lp - lq))))
            nll_ref.append(-lp[right])
            nll_cand.append(-lq[right])
            same.append(int(np.argmax(ref[pos])) == int(np.argmax(cand[pos])))
            dp.append(math.exp(lq[right]) - math.exp(lp[right]))
    return {k: np.asarray(v) for k, v in
            dict(kld=kld, nll_ref=nll_ref, nll_cand=nll_cand, same=same, dp=dp).items()}


class _Progress(Reporter):
    def __init__(self):
        self.seen = []

    def progress(self, done, total, message="", **extra):
        self.seen.append((done, total))


@pytest.fixture(scope="module")
def evaluated(tiny_llama_dir, tiny_gguf_q4):
    progress = _Progress()
    r = evaluate(str(tiny_llama_dir), str(tiny_gguf_q4), EVAL_TEXT.read_text(encoding="utf-8"), ctx=CTX,
                 max_chunks=WINDOWS, reporter=progress)
    return r, progress.seen


@pytest.fixture(scope="module")
def result(evaluated):
    return evaluated[0]


def test_eval_progress_counts_the_windows(evaluated):
    assert evaluated[1] == [(i, WINDOWS) for i in range(WINDOWS + 1)]  # 0 of 4 before the first, then each


def test_eval_figures_equal_numpy_on_both_runtimes_logits(result, by_numpy):
    n = by_numpy
    assert result.tokens == len(n["kld"]) == WINDOWS * (CTX - 1 - CTX // 2)
    assert result.ppl_reference == pytest.approx(math.exp(n["nll_ref"].mean()), rel=1e-5)
    assert result.ppl_candidate == pytest.approx(math.exp(n["nll_cand"].mean()), rel=1e-4)
    assert result.kld_mean == pytest.approx(n["kld"].mean(), rel=2e-3)
    assert result.kld_median == pytest.approx(np.median(n["kld"]), rel=5e-3)
    assert result.kld_p99 == pytest.approx(np.percentile(n["kld"], 99), rel=5e-3)
    assert result.kld_max == pytest.approx(n["kld"].max(), rel=5e-3)
    # a near tie may fall the other way between two builds of the same arithmetic: one token at most
    assert abs(result.top1_agreement - n["same"].mean()) <= 1 / len(n["same"]) + 1e-12
    assert result.delta_p_mean == pytest.approx(n["dp"].mean(), abs=1e-4)
    assert result.delta_p_rms == pytest.approx(np.sqrt((n["dp"] ** 2).mean()), rel=2e-3)
    per_chunk = n["kld"].reshape(WINDOWS, -1).mean(axis=1)
    assert result.kld_per_chunk == pytest.approx(per_chunk, rel=2e-3)


def test_the_figures_are_far_from_trivial(by_numpy):
    """The Q4_0 file differs enough that a wrong formula cannot hide inside the tolerances above."""
    n = by_numpy
    assert n["kld"].mean() > 0.01
    assert 0.2 < n["same"].mean() < 1.0
    assert abs(n["nll_cand"].mean() - n["nll_ref"].mean()) > 1e-3


def test_compare_measures_along_the_reference_answer(tiny_llama_dir, tiny_gguf_q4, transformers_logits,
                                                     llama_logits):
    from engine.runtime import open_runtime

    prompt = "The lighthouse keeper wrote"
    with open_runtime(tiny_llama_dir, n_ctx=256) as a, open_runtime(tiny_gguf_q4, n_ctx=256) as b:
        r = compare(a, b, prompt, max_tokens=12)
        ids = a.tokenize(prompt, add_bos=True)
    seq = ids + r.tokens_a
    ref, cand = transformers_logits(seq), llama_logits(seq)
    kld, same = [], []
    for pos in range(len(ids) - 1, len(seq) - 1):  # the logits that chose each token of A's answer
        lp, lq = _log_softmax(ref[pos]), _log_softmax(cand[pos])
        kld.append(float(np.sum(np.exp(lp) * (lp - lq))))
        same.append(int(np.argmax(ref[pos])) == int(np.argmax(cand[pos])))
    assert r.prompt_tokens == len(ids) and len(r.tokens_a) == 12
    assert r.kld_per_token == pytest.approx(kld, rel=5e-3, abs=1e-6)
    assert r.kld_mean == pytest.approx(np.mean(kld), rel=2e-3)
    assert r.kld_max == pytest.approx(max(kld), rel=5e-3)
    assert abs(r.top1_agreement - np.mean(same)) <= 1 / len(same) + 1e-12
    # A's greedy answer is transformers' own argmax at each step
    assert r.tokens_a == [int(np.argmax(ref[pos])) for pos in range(len(ids) - 1, len(seq) - 1)]
    expected = next((i for i, (x, y) in enumerate(zip(r.tokens_a, r.tokens_b)) if x != y),
                    None if len(r.tokens_a) == len(r.tokens_b) else min(len(r.tokens_a), len(r.tokens_b)))
    assert r.first_divergence == expected
