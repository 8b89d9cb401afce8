"""``nibble estimate``: file size, memory to run and to quantize, and whether it fits, per quant type."""

from __future__ import annotations

import json
import sys

from engine.commands import _args
from engine.core.units import human_bytes, human_count

NAME = "estimate"
HELP = "Predict file size and memory for each quant type, and whether it fits this machine."
ORDER = 20


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="a model folder, a .gguf file, or a Hub model id (owner/name)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--type", dest="qtype", metavar="TYPE", help="one quant type, e.g. Q4_K_M")
    g.add_argument("--all", action="store_true", help="every file type llama.cpp can write")
    p.add_argument("--ctx", type=_args.positive_int("tokens"), default=None,
                   help="context length in tokens (default 4096, or the model's trained context when shorter)")
    p.add_argument("--kv-type", default="f16", choices=["f16", "q8_0", "q4_0"], help="KV cache type")
    p.add_argument("--gpu-layers", type=_args.non_negative_int("layers"), default=0, help="layers offloaded to the GPU (default 0)")
    p.add_argument("--out-dir", default=".", help="where the file would be written (for the disk check)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    from engine.commands._mix import add_mix_arguments

    add_mix_arguments(p)


def run(args) -> int:
    from engine.commands._mix import run_mix, wants_mix
    from engine.estimate import awq_cost, default_context, estimate, estimate_all, file_types, load_plan, probe_machine

    if wants_mix(args):
        return run_mix(args)

    plan = load_plan(args.model)
    machine = probe_machine(args.out_dir)
    kw = dict(ctx=args.ctx or default_context(plan), kv_type=args.kv_type, gpu_layers=args.gpu_layers, machine=machine)
    if args.qtype:
        ests = [estimate(plan, args.qtype, **kw)]
    else:
        ests = estimate_all(plan, file_types() if args.all else None, **kw)
    awq = awq_cost(plan)
    if args.json:
        print(json.dumps({
            "model": plan.source, "arch": plan.arch, "n_params": plan.n_params,
            "machine": {"free_ram_bytes": machine.free_ram_bytes, "free_vram_bytes": machine.free_vram_bytes,
                        "free_disk_bytes": machine.free_disk_bytes, "disk_path": machine.disk_path},
            "types": [e.to_json() for e in ests],
            "awq": awq.to_json(),
        }, indent=1))
        return 0
    _print_table(plan, ests, machine, awq, sys.stdout)
    return 0


def _print_table(plan, ests, machine, awq, out) -> None:
    e0 = ests[0]
    print(f"{plan.source}: {plan.arch}, {human_count(plan.n_params)} parameters, {plan.n_layer} layers, "
          f"context {e0.ctx}, KV cache {e0.kv_type}, {e0.gpu_layers} GPU layers", file=out)
    print(f"free here: RAM {human_bytes(machine.free_ram_bytes)}, VRAM {human_bytes(machine.free_vram_bytes)}, "
          f"disk {human_bytes(machine.free_disk_bytes)} at {machine.disk_path}", file=out)
    head = f"{'type':<10}{'file':>11}{'bpw':>7}{'run RAM':>11}{'run VRAM':>11}{'KV':>11}" \
           f"{'quant RAM':>11}{'temp disk':>11}  fits"
    print(head, file=out)
    for e in ests:
        fit = "-" if e.fit is None else ("no" if not e.fit.fits else "tight" if e.fit.verdict == "tight" else "yes")
        if e.fit and e.fit.suggestion_text:
            fit += f" ({e.fit.suggestion_text})"
        print(f"{e.type:<10}{human_bytes(e.file_bytes):>11}{e.bits_per_weight:>7.2f}{human_bytes(e.run.ram_bytes):>11}"
              f"{human_bytes(e.run.vram_bytes):>11}{human_bytes(e.run.kv_cache_bytes):>11}"
              f"{human_bytes(e.quantize.peak_ram_bytes):>11}"
              f"{human_bytes(e.quantize.temp_disk_bytes):>11}  {fit}", file=out)
    if len(ests) == 1:
        e = ests[0]
        print("\ntensor types: " + ", ".join(f"{k} x{n} ({human_bytes(b)})" for k, (n, b) in e.tensor_types.items()),
              file=out)
        print("memory to run:", file=out)
        for p in e.run.parts:
            print(f"  {p.name:<34}{human_bytes(p.bytes):>11}  {p.where:<5} {'exact' if p.exact else 'estimated'}"
                  f"{'  ' + p.note if p.note else ''}", file=out)
        print("to quantize:", file=out)
        for p in e.quantize.parts:
            print(f"  {p.name:<44}{human_bytes(p.bytes):>11}  {p.where:<5} {'exact' if p.exact else 'estimated'}",
                  file=out)
        for problem in (e.fit.problems if e.fit else ()):
            print(f"does not fit: {problem}", file=out)
    print(f"\nfile sizes are {'exact' if plan.metadata_exact else 'exact for tensors; the tokenizer header is estimated'};"
          " weights and KV cache exact; compute buffers, overhead and quantizer memory estimated.", file=out)
    print(f"AWQ 4-bit (group {awq.group_size}): checkpoint {human_bytes(awq.checkpoint_bytes)}, calibration "
          f"~{human_bytes(awq.calibration_peak_ram_bytes)} RAM ({awq.n_samples} samples x {awq.seq_len} tokens, "
          "estimated)", file=out)
