"""`nibble bench` against `llama-bench` on the same GGUF files and thread count.

    python3 benchmarks/bench_vs_llama_bench.py [--llama-bin DIR] [--work DIR] [--threads N] [--rounds 2]

Both run pp512 and tg128 with timed repetitions after a warm-up. The two tools are run in alternation,
``--rounds`` times each, so load from other programs falls on both alike. On a machine shared with other
work, the fastest run of each tool is the one least disturbed, so the table compares the best runs (and
shows the medians too). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

from _benchmodel import LLAMA_BIN, ROOT, bench_models


def llama_bench(bin_dir, model, threads, reps):
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-p", "512", "-n", "128", "-r", str(reps),
                          "-t", str(threads), "-o", "json"], check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout)
    pp = next(r for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return pp["samples_ts"], tg["samples_ts"]


def nibble_bench(model, threads, reps):
    out = subprocess.run([sys.executable, "-m", "engine", "bench", str(model), "-p", "512", "-n", "128", "-r",
                          str(reps), "--threads", str(threads), "--json"], cwd=ROOT, check=True, capture_output=True,
                         text=True)
    d = json.loads(out.stdout)
    return d["pp_samples"], d["tg_samples"], d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bin", type=pathlib.Path, default=LLAMA_BIN)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/nibble-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per tool run")
    ap.add_argument("--size", choices=("small", "large"), default="small", help="bench model (see _benchmodel.py)")
    ap.add_argument("--qtypes", default="Q8_0,Q4_K_M")
    args = ap.parse_args()
    qtypes = args.qtypes.split(",")
    models = bench_models(args.work, qtypes, args.size)
    print(f"{args.size} model, threads {args.threads}, {args.rounds} alternating rounds of {args.reps} "
          "repetitions per tool\n")
    print("| model | test | nibble best | llama-bench best | difference | nibble median | llama-bench median |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    extra = {}
    for q in qtypes:
        ours, theirs = ([], []), ([], [])
        for _ in range(args.rounds):
            for i, xs in enumerate(llama_bench(args.llama_bin, models[q], args.threads, args.reps)):
                theirs[i].extend(xs)
            pp, tg, d = nibble_bench(models[q], args.threads, args.reps)
            ours[0].extend(pp)
            ours[1].extend(tg)
            extra[q] = d
        for i, test in enumerate(("pp512", "tg128")):
            a, b = max(ours[i]), max(theirs[i])
            print(f"| {models[q].name} | {test} | {a:.2f} | {b:.2f} | {100 * (a - b) / b:+.2f} % | "
                  f"{statistics.median(ours[i]):.2f} | {statistics.median(theirs[i]):.2f} |")
    print()
    for q, d in extra.items():
        print(f"- {q}: time to first token {1000 * d['ttft_s']:.0f} ms (512-token prompt), "
              f"RSS {d['rss_bytes'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
