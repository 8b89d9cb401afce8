"""AWQ quality and speed: Nibble's AWQ against round-to-nearest and llm-compressor's AWQModifier.

Same model, same calibration token blocks, same device (CPU), W4 asymmetric, group 128. Quality is
the mean KL divergence of each quantized model's next-token distribution from the original's, on
held-out text, llama-perplexity style (windows of --ctx tokens, second half of each scored).

    python3 benchmarks/awq_bench.py MODEL --calibration FILE --eval FILE [--samples 128 --seqlen 512]
        [--llmc /tmp/llmc/bin/python] [--search-samples 32 ...]

llm-compressor runs in its own venv through benchmarks/awq_llmcompressor_worker.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.awq import load_awq, quantize_awq  # noqa: E402
from engine.awq.calibration import calibration_blocks  # noqa: E402
from engine.awq.search import fake_quantize  # noqa: E402


def eval_windows(tok, text: str, ctx: int, max_windows: int) -> torch.Tensor:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = min(len(ids) // (ctx - 1), max_windows)
    bos = tok.bos_token_id
    rows = [[bos] + ids[i * (ctx - 1):(i + 1) * (ctx - 1)] for i in range(n)]
    return torch.tensor(rows)


@torch.no_grad()
def logprobs(model, windows: torch.Tensor) -> torch.Tensor:
    outs = []
    for w in windows.split(4):
        lp = torch.log_softmax(model(w).logits.float(), -1)
        outs.append(lp[:, w.shape[1] // 2:-1])
    return torch.cat(outs)


def quality(ref_lp: torch.Tensor, lp: torch.Tensor, windows: torch.Tensor) -> dict:
    kld = (ref_lp.exp() * (ref_lp - lp)).sum(-1).flatten()
    targets = windows[:, windows.shape[1] // 2 + 1:]
    nll = -lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return {"kld_mean": kld.mean().item(), "kld_p99": kld.quantile(0.99).item(),
            "top1_same": (ref_lp.argmax(-1) == lp.argmax(-1)).float().mean().item(),
            "ppl": nll.mean().exp().item()}


def rtn_model(model_dir, group_size: int = 128):
    """The model with every decoder-layer linear rounded to the nearest 4-bit level (W4 asymmetric, per group)."""
    from transformers import AutoModelForCausalLM

    rtn = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for m in rtn.model.layers.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data = fake_quantize(m.weight.data, group_size)
    return rtn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--search-samples", type=int, nargs="*", default=[32])
    ap.add_argument("--llmc", default=None, help="python of a venv with llmcompressor installed")
    ap.add_argument("--llmc-out", default=None,
                    help="an llm-compressor output folder made beforehand by the worker (same calibration "
                         "blocks) instead of running it here; its CPU time is read from --llmc-time")
    ap.add_argument("--llmc-time", default=None,
                    help='JSON {"wall": s, "cpu": s, "sys": s} of the worker process (GNU time -f)')
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(args.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    windows = eval_windows(tok, Path(args.eval).read_text(), args.ctx, args.windows)
    orig = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref_lp = logprobs(orig, windows)
    rows = {"original": quality(ref_lp, ref_lp, windows)}
    work = Path(tempfile.mkdtemp(prefix="awqbench-"))

    rows["RTN W4 g128"] = quality(ref_lp, logprobs(rtn_model(model_dir, args.group_size), windows), windows)

    for s in args.search_samples:
        out = work / f"nibble-{s}"
        c0, t0 = time.process_time(), time.perf_counter()
        quantize_awq(model_dir, out, group_size=args.group_size, calibration=args.calibration,
                     samples=args.samples, seqlen=args.seqlen, search_samples=s)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        q = quality(ref_lp, logprobs(load_awq(out, "cpu"), windows), windows)
        rows[f"Nibble AWQ (search on {s} samples)"] = dict(q, seconds=wall, cpu_seconds=cpu)

    if args.llmc:
        ids = calibration_blocks(tok, args.calibration, args.samples, args.seqlen)
        torch.save(ids, work / "ids.pt")
        out = work / "llmc"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        worker = Path(__file__).with_name("awq_llmcompressor_worker.py")
        env = dict(os.environ, PYTHONPATH="")
        subprocess.run([args.llmc, str(worker), str(model_dir), str(work / "ids.pt"), str(out)], check=True, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        inner = json.loads((out / "timing.json").read_text())["seconds"]
        m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        rows["llm-compressor AWQModifier W4A16_ASYM"] = dict(quality(ref_lp, logprobs(m, windows), windows),
                                                             seconds=inner, cpu_seconds=cpu, process_seconds=wall)

    if args.llmc_out:
        out = Path(args.llmc_out)
        inner = json.loads((out / "timing.json").read_text())["seconds"]
        t = json.loads(Path(args.llmc_time).read_text()) if args.llmc_time else {}
        m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        rows["llm-compressor AWQModifier W4A16_ASYM"] = dict(
            quality(ref_lp, logprobs(m, windows), windows), seconds=inner,
            **({"cpu_seconds": t["cpu"] + t["sys"], "process_seconds": t["wall"]} if t else {}))

    n_params = sum(p.numel() for p in orig.parameters())
    print(f"\nmodel {model_dir} ({n_params / 1e6:.1f}M params), calibration {args.samples} x {args.seqlen} tokens, "
          f"eval {windows.shape[0]} windows of {args.ctx}, torch threads {torch.get_num_threads()}\n")
    print("| method | mean KLD | KLD p99 | same top-1 | PPL | time (s) | CPU time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        t = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        c = f"{r['cpu_seconds']:.1f}" if "cpu_seconds" in r else "-"
        print(f"| {name} | {r['kld_mean']:.5f} | {r['kld_p99']:.4f} | {r['top1_same']:.3f} | {r['ppl']:.3f} | {t} | {c} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
