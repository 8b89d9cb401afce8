"""KL divergence along the context: quant types and KV cache types on one model, as `nibble eval --ctx-sweep`.

    python3 benchmarks/ctx_sweep.py [--model demo] [--types Q4_K_M,Q2_K] [--kv f16,q8_0,q4_0]
                                    [--lengths 128,256,512,1024] [--windows N]

Quantizes the model to each type with Nibble's quantizer, then for each type and KV cache type runs
``engine.analysis.sweep.context_sweep`` against the original (transformers, float32) on the default evaluation
text (the demo's held-out dialogues for the demo). Also sweeps the unquantized GGUF with each quantized KV
cache type, which isolates what the cache costs. Prints Markdown tables for benchmarks/RESULTS.md and the
time of each sweep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from engine.analysis.sweep import context_sweep, parse_lengths  # noqa: E402
from engine.core.units import format_kld  # noqa: E402
from engine.models.inspect import inspect_model  # noqa: E402
from engine.runtime import open_runtime  # noqa: E402


def main(argv=None) -> int:
    from engine.gguf.convert import convert_to_gguf
    from engine.gguf.quantize import quantize

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--types", default="Q4_K_M,Q2_K")
    ap.add_argument("--kv", default="f16,q8_0,q4_0")
    ap.add_argument("--lengths", default="128,256,512,1024")
    ap.add_argument("--windows", type=int, default=None, help="windows at each length (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    lengths = parse_lengths(args.lengths, inspect_model(args.model).context_length or None)
    kvs = args.kv.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, open_runtime(args.model, n_ctx=max(lengths)) as ref:
        files = {"unquantized": convert_to_gguf(args.model, Path(tmp) / "model-unquantized.gguf")}
        for t in args.types.split(","):
            files[t] = quantize(args.model, t, Path(tmp) / f"model-{t}.gguf").output
        for name, path in files.items():
            for kv in kvs:
                if name == "unquantized" and kv == "f16" and len(files) > 1:
                    continue  # nearly zero: the unquantized file with an f16 cache differs only by rounding
                with open_runtime(path, n_ctx=max(lengths), kv_type=kv, threads=args.threads) as cand:
                    t0 = time.perf_counter()
                    r = context_sweep(ref, cand, lengths, max_windows=args.windows)
                    rows.append((name, kv, r, time.perf_counter() - t0))
                print(f"{name} / KV {kv}: " + ", ".join(f"{p.ctx}: {format_kld(p.kld_mean)}" for p in r.points)
                      + f" ({rows[-1][3]:.1f} s)", file=sys.stderr, flush=True)

    r0 = rows[0][2]
    print(f"Text: {r0.text_name}, {r0.text_tokens:,} tokens; windows per length: "
          + ", ".join(f"{p.ctx}: {p.chunks}" for p in r0.points) + "\n")
    print("| weights | KV cache | " + " | ".join(f"KLD @ {n}" for n in lengths) + " | same top @ "
          f"{lengths[0]} / {lengths[-1]} | sweep time |")
    print("|---|---|" + "---|" * (len(lengths) + 2))
    for name, kv, r, secs in rows:
        kl = " | ".join(format_kld(p.kld_mean) for p in r.points)
        print(f"| {name} | {kv} | {kl} | {100 * r.points[0].top1_agreement:.1f} % / "
              f"{100 * r.points[-1].top1_agreement:.1f} % | {secs:.1f} s |")
    bins = rows[0][2].positions
    print(f"\nKLD by position within the {lengths[-1]}-token window (every position scored):\n")
    print("| weights | KV cache | " + " | ".join(f"{b.start}-{b.end - 1}" for b in bins) + " |")
    print("|---|---|" + "---|" * len(bins))
    for name, kv, r, _ in rows:
        print(f"| {name} | {kv} | " + " | ".join(format_kld(b.kld_mean) for b in r.positions) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
