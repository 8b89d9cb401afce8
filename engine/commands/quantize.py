"""nibble quantize MODEL --type TYPE --out FILE: GGUF (llama.cpp types) or AWQ."""

from __future__ import annotations

import json
import sys

from engine.commands import _args
from engine.core.units import format_kld

NAME = "quantize"
HELP = "quantize a model to a GGUF type (Q4_K_M, IQ4_XS, Q8_0, ...) or to AWQ"
ORDER = 20


def add_arguments(p):
    p.add_argument("model", help="Hugging Face model folder, an unquantized .gguf, or 'demo'")
    p.add_argument("--type", help="GGUF type (Q4_K_M, IQ4_XS, Q8_0, ...; `nibble estimate MODEL --all` lists them) or AWQ; "
                   "several GGUF types separated by commas (Q4_K_M,Q8_0) convert the model once and write each into --out")
    p.add_argument("--out", required=True, help="output .gguf file (a folder for AWQ, and for several types)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--calibration", metavar="TEXT_FILE",
                   help="compute an importance matrix from this text ('default': the text Nibble ships)")
    g.add_argument("--imatrix", metavar="FILE", help="importance matrix from llama-imatrix (GGUF or .dat)")
    p.add_argument("--imatrix-chunks", type=_args.positive_int("windows"), default=None, metavar="N",
                   help="use at most N windows of calibration text for the importance matrix")
    p.add_argument("--save-imatrix", metavar="FILE", help="also save the computed importance matrix (GGUF format)")
    p.add_argument("--threads", type=_args.positive_int("threads"), default=None, help="CPU threads (default: all)")
    p.add_argument("--json-progress", action="store_true", help="print progress as JSON lines on stdout")
    # AWQ options
    p.add_argument("--bits", type=_args.positive_int("bits"), default=4, help="AWQ: weight bits (4)")
    p.add_argument("--group-size", type=_args.positive_int("weights"), default=128, help="AWQ: group size (128)")
    p.add_argument("--samples", type=_args.positive_int("samples"), default=128, help="AWQ: calibration samples (128)")
    p.add_argument("--seqlen", type=_args.positive_int("tokens"), default=512, help="AWQ: tokens per calibration sample (512)")
    p.add_argument("--device", default="cpu", help="AWQ: cpu, cuda or mps")
    _add_mix_arguments(p)
    p.add_argument("--awq", action="store_true", help="GGUF: fold AWQ's activation-aware scales into the weights before quantizing "
                        "(lowered KL divergence at the same size in benchmarks/RESULTS.md)")


def _add_mix_arguments(p) -> None:
    g = p.add_argument_group("a mix of types for a size (instead of --type)")
    g.add_argument("--target-size", metavar="SIZE", help="the lowest-error file of at most SIZE: bytes or 4.2GB, "
                   "3900MiB; each tensor's type is chosen from its measured effect on the output")
    g.add_argument("--target-bpw", type=float, metavar="B", help="the same, for B bits per weight")
    g.add_argument("--recipe", metavar="FILE", help="quantize with the tensor types of a saved .recipe.json "
                   "(e.g. one made from this model's base)")


def _run_mix(args, reporter) -> int:
    from engine.core.errors import NibbleError
    from engine.pipelines.mixed import quantize_mixed

    if args.type:
        raise NibbleError("give --type or a mix (--target-size, --target-bpw, --recipe), not both")
    if args.awq:
        raise NibbleError("--awq applies to one --type; a mix (--target-size, --target-bpw, --recipe) does not take it")
    result = quantize_mixed(args.model, args.out, target_size=args.target_size, target_bpw=args.target_bpw,
                            recipe=args.recipe, calibration=args.calibration, imatrix=args.imatrix,
                            threads=args.threads, reporter=reporter)
    summary = result.to_json()
    if args.json_progress:
        print(json.dumps({"event": "done", **summary}), flush=True)
    else:
        kld = f", predicted KLD {format_kld(summary['predicted_kld'])}" if summary["predicted_kld"] is not None else ""
        print(f"wrote {summary['output']} (mix: {_counts(summary['tensor_types'])}; {summary['file_bytes']:,} bytes"
              f"{kld}) in {summary['seconds']:.1f} s; recipe {summary['recipe']}")
    return 0


def _run_queue(args, reporter) -> int:
    from engine.core.errors import NibbleError
    from engine.pipelines.queue import quantize_queue

    if args.awq or args.save_imatrix:
        raise NibbleError("several types at once take neither --awq nor --save-imatrix; quantize one type for those")
    result = quantize_queue(args.model, args.type.split(","), args.out, imatrix=args.imatrix,
                            calibration=args.calibration, imatrix_chunks=args.imatrix_chunks, threads=args.threads,
                            reporter=reporter)
    summary = result.to_json()
    if args.json_progress:
        print(json.dumps({"event": "done", **summary}), flush=True)
    else:
        for o in summary["outputs"]:
            print(f"wrote {o['output']} ({o['type']}, {o['file_bytes'] / 2**20:,.1f} MiB)")
        print(f"{len(summary['outputs'])} types in {summary['seconds']:.1f} s")
    return 0


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def run(args) -> int:
    from engine.commands._models import quiet_libraries
    from engine.core.progress import JsonLinesReporter, TextReporter

    if args.target_size is not None or args.target_bpw is not None or args.recipe:
        reporter = JsonLinesReporter(sys.stdout) if args.json_progress else TextReporter(sys.stderr)
        return _run_mix(args, reporter)
    if not args.type:
        from engine.core.errors import NibbleError

        raise NibbleError("give --type TYPE (e.g. Q4_K_M), or --target-size SIZE for the best mix of types for a size")
    from engine.pipelines.quantize import quantize_model

    quiet_libraries()
    reporter = JsonLinesReporter(sys.stdout) if args.json_progress else TextReporter(sys.stderr)
    if "," in args.type:
        return _run_queue(args, reporter)
    result = quantize_model(
        args.model, args.type, args.out, awq_scales=args.awq, imatrix=args.imatrix, calibration=args.calibration,
        imatrix_chunks=args.imatrix_chunks, save_imatrix=args.save_imatrix, threads=args.threads, bits=args.bits,
        group_size=args.group_size, samples=args.samples, seqlen=args.seqlen, device=args.device, reporter=reporter,
        note=lambda text: print(f"nibble: note: {text} (--awq)", file=sys.stderr),
    )
    summary = result.to_json()
    if args.json_progress:
        print(json.dumps({"event": "done", **summary}), flush=True)
    else:
        size = summary.get("file_bytes", 0) / 2**20
        print(f"wrote {summary['output']} ({summary['type']}, {size:,.1f} MiB) in {summary['seconds']:.1f} s")
    return 0
