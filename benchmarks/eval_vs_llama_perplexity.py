"""`nibble eval` against `llama-perplexity --kl-divergence` on the same GGUF files and text.

    python3 benchmarks/eval_vs_llama_perplexity.py [--llama-bin DIR] [--work DIR] [--threads N] [--ctx 512]

llama-perplexity is built from the llama.cpp source that llama-cpp-python vendors (see RESULTS.md).
Prints a Markdown table: each figure from both tools and their relative difference.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys

from _benchmodel import LLAMA_BIN, ROOT, bench_models

TEXT = ROOT / "resources" / "eval.txt"

PATTERNS = {
    "ppl_candidate": r"Mean PPL\(Q\)\s*:\s*([\d.]+)",
    "ppl_reference": r"Mean PPL\(base\)\s*:\s*([\d.]+)",
    "kld_mean": r"Mean\s+KLD:\s*([\d.]+)",
    "kld_median": r"Median\s+KLD:\s*([\d.]+)",
    "kld_p99": r"99\.0%\s+KLD:\s*([\d.]+)",
    "kld_max": r"Maximum KLD:\s*([\d.]+)",
    "delta_p_rms": r"RMS Δp\s*:\s*([\d.]+)",
    "top1_agreement": r"Same top p:\s*([\d.]+)",
}
PERCENT = {"delta_p_rms", "top1_agreement"}


def llama_perplexity(bin_dir, ref, cand, ctx, threads, work):
    base = work / f"{ref.stem}-c{ctx}.kld"
    common = ["-f", str(TEXT), "-c", str(ctx), "-t", str(threads), "-b", str(ctx)]
    if not base.exists():
        subprocess.run([str(bin_dir / "llama-perplexity"), "-m", str(ref), "--kl-divergence-base", str(base),
                        *common], check=True, capture_output=True, text=True)
    # llama-perplexity logs from a background thread and now and then exits before its final statistics
    # are written out; read them from its log file or its output, running it again when both lack them.
    log_file = work / f"{cand.stem}-c{ctx}.log"
    for _ in range(4):
        out = subprocess.run([str(bin_dir / "llama-perplexity"), "-m", str(cand), "--kl-divergence-base", str(base),
                              "--kl-divergence", "--log-file", str(log_file), *common], check=True,
                             capture_output=True, text=True)
        log = next((t for t in (log_file.read_text(encoding="utf-8"), out.stdout + out.stderr)
                    if "Same top p:" in t and "Maximum KLD" in t), "")
        if log:
            break
    figures = {}
    for key, pat in PATTERNS.items():
        m = re.search(pat, log)
        if m is None:
            raise SystemExit(f"could not find {key} in llama-perplexity's output (ran it 4 times)")
        figures[key] = float(m.group(1)) / (100.0 if key in PERCENT else 1.0)
    return figures


def nibble_eval(ref, cand, ctx, threads):
    out = subprocess.run([sys.executable, "-m", "engine", "eval", str(ref), str(cand), "--ctx", str(ctx),
                          "--threads", str(threads), "--json"], cwd=ROOT, check=True, capture_output=True, text=True)
    d = json.loads(out.stdout)
    return {
        "ppl_candidate": d["candidate"]["ppl"], "ppl_reference": d["reference"]["ppl"],
        "kld_mean": d["kld"]["mean"], "kld_median": d["kld"]["median"], "kld_p99": d["kld"]["p99"],
        "kld_max": d["kld"]["max"], "delta_p_rms": d["delta_p"]["rms"], "top1_agreement": d["top1_agreement"],
        "tokens": d["tokens"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bin", type=pathlib.Path, default=LLAMA_BIN)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/nibble-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    args = ap.parse_args()
    models = bench_models(args.work)
    worst = 0.0
    for q in ("Q8_0", "Q4_K_M"):
        ours = nibble_eval(models["F32"], models[q], args.ctx, args.threads)
        theirs = llama_perplexity(args.llama_bin, models["F32"], models[q], args.ctx, args.threads, args.work)
        print(f"\n### F32 reference vs {q} candidate (ctx {args.ctx}, {ours['tokens']} scored tokens)\n")
        print("| figure | nibble eval | llama-perplexity | difference |")
        print("| --- | ---: | ---: | ---: |")
        for key in PATTERNS:
            a, b = ours[key], theirs[key]
            rel = abs(a - b) / abs(b) if b else abs(a - b)
            # llama-perplexity prints Δp RMS and same-top as percentages with 3 decimals
            rounding = key in PERCENT and abs(a - b) <= 0.5e-5
            if not rounding:
                worst = max(worst, rel)
            note = " (within llama-perplexity's printed rounding)" if rounding and rel > 0.01 else ""
            print(f"| {key} | {a:.6g} | {b:.6g} | {100 * rel:.3f} %{note} |")
    print(f"\nlargest relative difference (beyond printed rounding): {100 * worst:.3f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
