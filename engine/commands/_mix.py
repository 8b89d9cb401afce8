"""``nibble estimate MODEL --target-size SIZE``: the best mix for a size, its exact file and predicted quality."""

from __future__ import annotations

import json
import sys

from engine.core.units import format_kld, human_bytes


def add_mix_arguments(p) -> None:
    g = p.add_argument_group("the best mix of types for a size (measures the model once, then cached)")
    g.add_argument("--target-size", metavar="SIZE", help="show the mix for a file of at most SIZE (4.2GB, 3900MiB, bytes)")
    g.add_argument("--target-bpw", type=float, metavar="B", help="the same, for B bits per weight")
    g.add_argument("--calibration", metavar="TEXT_FILE", help="text to measure on (default: Nibble's, or the demo's dialogues)")


def wants_mix(args) -> bool:
    return args.target_size is not None or args.target_bpw is not None


def run_mix(args) -> int:
    from engine.core.errors import NibbleError
    from engine.core.progress import TextReporter
    from engine.estimate import default_context
    from engine.estimate.mix import describe
    from engine.pipelines.mixed import plan_mix

    if args.qtype or args.all:
        raise NibbleError("give --type/--all or --target-size/--target-bpw, not both")
    plan, mix, profile = plan_mix(args.model, target_size=args.target_size, target_bpw=args.target_bpw,
                                  calibration=args.calibration, reporter=TextReporter(sys.stderr))
    args.ctx = args.ctx or default_context(plan)
    d = describe(plan, mix, profile.kld, ctx=args.ctx, kv_type=args.kv_type, gpu_layers=args.gpu_layers)
    if args.json:
        print(json.dumps({"model": plan.source, "arch": plan.arch, "n_params": plan.n_params, "mix": d}, indent=1))
        return 0
    out = sys.stdout
    print(f"{plan.source}: best mix for {human_bytes(d['target_bytes'])} ({d['target_bytes']:,} bytes)", file=out)
    print(f"file {human_bytes(d['file_bytes'])} ({d['file_bytes']:,} bytes, "
          f"{'exact' if d['file_exact'] else 'tensors exact, header estimated'}), {d['bits_per_weight']:.2f} bpw, "
          f"predicted KLD {format_kld(d['predicted_kld'])}", file=out)
    print("types: " + ", ".join(f"{k} x{v['tensors']} ({human_bytes(v['bytes'])})" for k, v in d["type_counts"].items()),
          file=out)
    if d["uniform"]:
        print("uniform types near this size (predicted KLD, same measurement):", file=out)
        for u in d["uniform"]:
            print(f"  {u['type']:<8}{human_bytes(u['file_bytes']):>11}  {format_kld(u['predicted_kld']):>9}", file=out)
    r = d["run"]
    print(f"to run at context {args.ctx}: RAM {human_bytes(r['ram_bytes'])}, VRAM {human_bytes(r['vram_bytes'])}", file=out)
    print("--json lists each tensor's type; `nibble quantize MODEL --target-size ...` writes this file", file=out)
    return 0
