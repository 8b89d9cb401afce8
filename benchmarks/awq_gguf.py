"""Does `nibble quantize --awq` lower a GGUF's KL divergence at the same file size?

For each GGUF type, the model is quantized plainly and after AWQ's scales (and clipping) have been
folded into its weights (``engine.awq.apply_awq_to_weights``, what ``--awq`` does), with AWQ searching
for groups of 128 and of 32 (GGUF's K-quants and Q4_0 use blocks of 32). Each file is measured with
``engine.analysis.evaluate`` against the original model on the model's evaluation text (the held-out dialogues
for the demo and models trained like it).

    python3 benchmarks/awq_gguf.py MODEL [--types Q4_0 Q4_K_M Q3_K_M] [--samples 128] [--chunks 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.awq import apply_awq_to_weights  # noqa: E402
from engine.analysis.evaluate import default_text_for, evaluate  # noqa: E402
from engine.gguf.quantize import quantize  # noqa: E402
from engine.models.source import resolve_model_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--types", nargs="+", default=["Q4_0", "Q4_K_M", "Q3_K_M"])
    ap.add_argument("--calibration", default=None, help="AWQ calibration text (default: Nibble's)")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--variants", nargs="+", default=["g128", "g128-noclip", "g32", "g32-noclip"],
                    help="AWQ variants beside the plain file: gGROUP, with -noclip for scales only")
    args = ap.parse_args()

    model = resolve_model_path(args.model)
    text, text_name = default_text_for(model)
    work = Path(tempfile.mkdtemp(prefix="awq-gguf-"))
    variants = {"plain": None}
    try:
        for variant in args.variants:
            g, clip = int(variant.split("-")[0][1:]), not variant.endswith("-noclip")
            t0 = time.perf_counter()
            d = work / f"awq-{variant}"
            apply_awq_to_weights(model, d, group_size=g, calibration=args.calibration, samples=args.samples,
                                 seqlen=args.seqlen, clip=clip)
            variants[f"AWQ scales g{g}" + (" + clipping" if clip else " (what --awq does)" * (g == 128))] = d
            print(f"AWQ scales g{g} clip={clip}: {time.perf_counter() - t0:.1f} s", flush=True)
        print(f"\nmodel {model}, eval {text_name}, ctx {args.ctx}, {args.chunks} windows; AWQ calibration "
              f"{args.samples} x {args.seqlen}\n")
        print("| type | weights | file (MiB) | mean KLD | KLD p99 | same top token | PPL |")
        print("|---|---|---|---|---|---|---|")
        for qtype in args.types:
            for name, src in variants.items():
                out = work / f"{qtype}-{name.replace(' ', '_').replace(',', '')}.gguf"
                quantize(src or model, qtype, out)
                r = evaluate(model, out, text, ctx=args.ctx, text_name=text_name, max_chunks=args.chunks)
                size = out.stat().st_size / 2**20
                print(f"| {qtype} | {name} | {size:.2f} | {r.kld_mean:.5f} | {r.kld_p99:.4f} | "
                      f"{100 * r.top1_agreement:.2f} % | {r.ppl_candidate:.4f} |", flush=True)
                out.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
