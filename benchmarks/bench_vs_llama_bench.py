"""`nibble bench` against `llama-bench` on the same GGUF files and thread count.

    python3 benchmarks/bench_vs_llama_bench.py [--llama-bin DIR] [--work DIR] [--threads N] [--rounds 2]

Both run pp512 and tg128 with five timed repetitions after a warm-up. The two tools are run in alternation,
``--rounds`` times each, so load from other programs falls on both alike; the table shows the median of
the rounds. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

from _benchmodel import LLAMA_BIN, ROOT, bench_models


def llama_bench(bin_dir, model, threads):
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-p", "512", "-n", "128", "-r", "5",
                          "-t", str(threads), "-o", "json"], check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout)
    pp = next(r for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return pp["avg_ts"], tg["avg_ts"]


def nibble_bench(model, threads):
    out = subprocess.run([sys.executable, "-m", "engine", "bench", str(model), "-p", "512", "-n", "128", "-r", "5",
                          "--threads", str(threads), "--json"], cwd=ROOT, check=True, capture_output=True, text=True)
    d = json.loads(out.stdout)
    return d["pp_tokens_per_s"], d["tg_tokens_per_s"], d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bin", type=pathlib.Path, default=LLAMA_BIN)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/nibble-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    models = bench_models(args.work)
    print(f"threads {args.threads}, {args.rounds} alternating rounds, median shown\n")
    print("| model | test | nibble bench (t/s) | llama-bench (t/s) | difference |")
    print("| --- | --- | ---: | ---: | ---: |")
    extra = {}
    for q in ("Q8_0", "Q4_K_M"):
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(llama_bench(args.llama_bin, models[q], args.threads))
            pp, tg, d = nibble_bench(models[q], args.threads)
            ours.append((pp, tg))
            extra[q] = d
        for i, test in enumerate(("pp512", "tg128")):
            a = statistics.median(o[i] for o in ours)
            b = statistics.median(t[i] for t in theirs)
            print(f"| {models[q].name} | {test} | {a:.2f} | {b:.2f} | {100 * (a - b) / b:+.2f} % |")
    print()
    for q, d in extra.items():
        print(f"- {q}: time to first token {1000 * d['ttft_s']:.0f} ms (512-token prompt), "
              f"RSS {d['rss_bytes'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
