"""What quantization costs the demo model: held-out accuracy and KL divergence for each GGUF type.

    python3 benchmarks/demo_model/quant_quality.py [--n 200] [--types Q8_0,Q6_K,...] [--model DIR]

Quantizes resources/demo (or a candidate folder made by train.py, ``--model``) with Nibble's GGUF quantizer, asks each file the same held-out questions
through llama.cpp (greedy), and measures mean KL divergence from the unquantized model (transformers,
float32) over demo dialogues. Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from engine.analysis import tasks  # noqa: E402
from engine.core.units import format_kld  # noqa: E402
from engine.models import demo, demo_questions  # noqa: E402
from transformers_chat import TransformersChat  # noqa: E402

TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def kld_tokens(model_dir: Path = demo.DEMO_DIR, n_windows: int = 2, ctx: int = 512) -> list[list[int]]:
    """Windows of demo dialogues (each starting with BOS), tokenized by the demo's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    text = "".join(demo.render_chat(d) for d in demo_questions.training_dialogues(40 * n_windows, seed=1000))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = []
    for i in range(n_windows):
        w = ids[i * ctx:(i + 1) * ctx]
        windows.append(w if w[0] == tok.bos_token_id else [tok.bos_token_id] + w[:-1])
    return windows


def reference_logprobs(windows: list[list[int]], model_dir: Path = demo.DEMO_DIR) -> list[np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([w])).logits[0].float(), -1).double().numpy() for w in windows]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def open_gguf(path: Path, n_ctx: int = 1024, logits_all: bool = False):
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=n_ctx, n_threads=2, verbose=False, logits_all=logits_all)


def gguf_kld(path: Path, windows: list[list[int]], ref: list[np.ndarray]) -> dict:
    """Mean and 99th-percentile KL(reference || candidate) and how often the top token agrees."""
    llm = open_gguf(path, n_ctx=max(len(w) for w in windows), logits_all=True)
    klds, same = [], []
    for w, lp in zip(windows, ref):
        llm.reset()
        llm.eval(w)
        lq = _log_softmax(np.asarray(llm.scores[:len(w)], dtype=np.float64))
        klds.append((np.exp(lp) * (lp - lq)).sum(-1))
        same.append(lp.argmax(-1) == lq.argmax(-1))
    k = np.concatenate(klds)
    return {"kld": float(k.mean()), "kld_p99": float(np.percentile(k, 99)), "same_top": float(np.concatenate(same).mean())}


def gguf_chat(path: Path, max_new_tokens: int = 32):
    """A greedy chat callable over a GGUF file (llama.cpp), for ``tasks.score_task``."""
    llm = open_gguf(path)
    eos = llm.token_eos()

    def generate(messages: list[dict]) -> str:
        prompt = demo.render_chat(messages, add_generation_prompt=True)
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        out: list[int] = []
        llm.reset()
        for t in llm.generate(tokens, temp=0.0, top_k=1):
            if t == eos or len(out) >= max_new_tokens:
                break
            out.append(t)
        return llm.detokenize(out).decode("utf-8", "replace").strip()

    return generate


def main(argv=None) -> int:
    from engine.gguf.quantize import quantize

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="held-out questions per type")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--model", type=Path, default=demo.DEMO_DIR, help="the demo, or a candidate from train.py")
    ap.add_argument("--no-kld", action="store_true", help="accuracy only (faster, for screening candidates)")
    args = ap.parse_args(argv)

    if not args.no_kld:
        windows = kld_tokens(args.model)
        ref = reference_logprobs(windows, args.model)
    questions = demo_questions.heldout_questions(args.n)
    chat = TransformersChat(args.model)
    base = tasks.score_answers(questions, chat.batch([demo_questions.question_messages(q) for q in questions]))
    print(f"bf16: {base.summary()}", file=sys.stderr, flush=True)
    rows = [("bf16 (transformers)", args.model / "model.safetensors", base, None)]
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.types.split(","):
            path = Path(tmp) / f"demo-{t}.gguf"
            quantize(args.model, t, path)
            t0 = time.time()
            score = tasks.score_task(gguf_chat(path), n=args.n)
            q = None if args.no_kld else gguf_kld(path, windows, ref)
            rows.append((t, path, score, q))
            kld = f"; KLD {format_kld(q['kld'])}" if q else ""
            print(f"{t}: {score.summary()}{kld} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            rows[-1] = (t, path.stat().st_size, score, q)
        rows[0] = (rows[0][0], rows[0][1].stat().st_size, base, None)

    cats = demo_questions.CATEGORIES
    print("| type | size | " + " | ".join(demo_questions.CATEGORY_LABELS[c] for c in cats)
          + " | overall | points vs bf16 | mean KLD | KLD p99 | same top |")
    print("|---|---|" + "---|" * (len(cats) + 5))
    for name, size, score, q in rows:
        accs = " | ".join(f"{score.per_category[c].accuracy:.0%}" for c in cats)
        kq = f"{format_kld(q['kld'])} | {format_kld(q['kld_p99'])} | {q['same_top']:.1%}" if q else (
            "0 | 0 | 100%" if name.startswith("bf16") else "— | — | —")
        points = f"{(score.correct - base.correct) * 100 / base.total:+.1f}"
        print(f"| {name} | {size / 2**20:.1f} MiB | {accs} | {score.overall:.1%} | {points} | {kq} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
