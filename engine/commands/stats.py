"""``nibble stats ORIGINAL QUANTIZED``: how far quantization moved each tensor's weights."""

from __future__ import annotations

import json
import sys

from engine.commands import _args
from engine.core.progress import TextReporter

NAME = "stats"
HELP = "weight and quantization-error statistics, tensor by tensor, of a GGUF or AWQ model against the original"
ORDER = 45


def add_arguments(parser) -> None:
    parser.add_argument("original", help="the original Hugging Face folder (or an unquantized GGUF)")
    parser.add_argument("quantized", help="a .gguf file or an AWQ folder made from it")
    parser.add_argument("--bins", type=_args.positive_int("bins"), default=64, help="histogram bins (default 64)")
    parser.add_argument("--top", type=_args.non_negative_int("tensors"), default=10, help="how many worst tensors to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print everything, histograms included, as JSON")


def run(args) -> int:
    from engine.analysis.stats import compute_stats

    reporter = TextReporter() if not args.json and sys.stderr.isatty() else None
    report = compute_stats(args.original, args.quantized, bins=args.bins, top=args.top, reporter=reporter)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{report.quantized} against {report.original}: {len(report.tensors)} quantized tensors, "
          f"{report.bits_per_weight:.2f} bits per weight")
    print()
    print(f"{'layer':>6} {'tensors':>7} {'weights':>12} {'bpw':>6} {'RMSE':>10} {'rel.err':>8} {'min cos':>8}")
    for s in report.layers:
        name = "other" if s.layer is None else str(s.layer)
        print(f"{name:>6} {s.tensors:>7} {s.n_elements:>12,} {s.bits_per_weight:>6.2f} {s.rmse:>10.3e} "
              f"{100 * s.relative_error:>7.2f}% {s.min_cosine:>8.5f}")
    print()
    print("largest relative error:")
    by_name = {t.name: t for t in report.tensors}
    for name in report.worst:
        t = by_name[name]
        print(f"  {name:<32} {t.qtype:<8} {100 * t.relative_error:6.2f}%  RMSE {t.rmse:.3e}  "
              f"max |err| {t.max_abs_error:.3e}  cos {t.cosine:.5f}")
    return 0
