"""nibble quantize MODEL --type TYPE --out FILE: GGUF (llama.cpp types) or AWQ."""

from __future__ import annotations

import json
import sys

from engine.commands import _args

NAME = "quantize"
HELP = "quantize a model to a GGUF type (Q4_K_M, IQ4_XS, Q8_0, ...) or to AWQ"
ORDER = 20


def add_arguments(p):
    p.add_argument("model", help="Hugging Face model folder, an unquantized .gguf, or 'demo'")
    p.add_argument("--type", required=True, help="GGUF type (Q4_K_M, IQ4_XS, Q8_0, ...; `nibble estimate MODEL --all` lists them) or AWQ")
    p.add_argument("--out", required=True, help="output .gguf file (a folder for AWQ)")
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
    p.add_argument("--awq", action="store_true", help="GGUF: fold AWQ's activation-aware scales into the weights before quantizing "
                        "(lowered KL divergence at the same size in benchmarks/RESULTS.md)")


def run(args) -> int:
    from engine.commands._models import quiet_libraries
    from engine.core.progress import JsonLinesReporter, TextReporter
    from engine.pipelines.quantize import quantize_model

    quiet_libraries()
    reporter = JsonLinesReporter(sys.stdout) if args.json_progress else TextReporter(sys.stderr)
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
