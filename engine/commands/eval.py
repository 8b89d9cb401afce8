"""``nibble eval REFERENCE CANDIDATE``: perplexity and KL divergence, llama-perplexity style."""

from __future__ import annotations

import json
import sys

from engine.commands import _args
from engine.commands._models import add_runtime_arguments, open_from_args, quiet_libraries
from engine.core.progress import TextReporter
from engine.core.units import format_kld

NAME = "eval"
HELP = "measure how far a quantized model is from the original (perplexity, KL divergence, top-1 agreement)"
ORDER = 40


def add_arguments(parser) -> None:
    parser.add_argument("reference", help="the reference model: Hugging Face folder, .gguf or AWQ folder")
    parser.add_argument("candidate", help="the model to judge against it")
    parser.add_argument("--text", default=None, metavar="FILE",
                        help="UTF-8 text to evaluate on (default: Nibble's own evaluation text)")
    parser.add_argument("--chunks", type=_args.positive_int("windows"), default=None, metavar="N", help="evaluate only the first N windows")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--task", choices=["auto", "demo", "none"], default="auto",
                        help="also score answers on held-out demo questions (auto: when the reference is the demo model)")
    parser.add_argument("--task-questions", type=_args.positive_int("questions"), default=100, metavar="N",
                        help="how many held-out questions the task score asks (default 100)")
    parser.add_argument("--ctx-sweep", default=None, metavar="LENGTHS",
                        help="evaluate at each of these context lengths, e.g. 256,512,1024,max (max: the model's "
                             "trained context), and by position within the longest window; --chunks caps the "
                             "windows at each length")
    parser.add_argument("--kv-type", default="f16", metavar="TYPE",
                        help="the candidate's KV cache type (GGUF): f16 (default), q8_0, q4_0, ...")
    parser.add_argument("--csv", default=None, metavar="FILE", help="with --ctx-sweep: also write the figures as CSV")
    add_runtime_arguments(parser, ctx_default=512, ctx_help="tokens per window (default 512, as llama-perplexity)")


def run(args) -> int:
    from engine.analysis.evaluate import default_text_for, evaluate, read_eval_text

    quiet_libraries()
    if args.ctx_sweep is not None:
        return run_sweep(args)
    if args.csv:
        from engine.core.errors import NibbleError

        raise NibbleError("a CSV file is written for a context sweep; add the lengths to sweep", setting="context length")
    from engine.models.demo import is_demo_model
    from engine.models.demo_questions import TASK_CONTEXT

    run_task = args.task == "demo" or (args.task == "auto" and is_demo_model(args.reference))
    # the windows are --ctx tokens; the runtimes also hold the task's longest question when it runs
    n_ctx = max(args.ctx, TASK_CONTEXT) if run_task else args.ctx
    text, text_path = read_eval_text(args.text) if args.text else default_text_for(args.reference)
    reporter = TextReporter() if not args.json and sys.stderr.isatty() else None
    task = {}
    with open_from_args(args.reference, args, n_ctx=n_ctx, partner=args.candidate) as ref, \
            open_from_args(args.candidate, args, n_ctx=n_ctx, partner=args.reference, kv_type=args.kv_type) as cand:
        result = evaluate(ref, cand, text, ctx=args.ctx, reporter=reporter, text_name=str(text_path),
                          max_chunks=args.chunks)
        if run_task:
            from engine.analysis.tasks import runtime_chat, score_task

            for side, rt in (("reference", ref), ("candidate", cand)):
                task[side] = score_task(runtime_chat(rt), n=args.task_questions, reporter=reporter)
    from engine.pipelines.record import record_evaluation

    record_evaluation(args.reference, args.candidate, result, str(text_path), task)
    if args.json:
        out = result.to_json()
        if task:
            out["task"] = {side: score.to_dict() for side, score in task.items()}
        print(json.dumps(out, indent=2))
        return 0
    r = result
    print(f"reference  {r.reference}")
    print(f"candidate  {r.candidate}")
    print(f"text       {text_path} ({r.text_tokens} tokens, {r.chunks} windows of {r.ctx}, {r.tokens} scored)")
    print(f"PPL        reference {r.ppl_reference:.4f} ± {r.ppl_reference_err:.4f}   "
          f"candidate {r.ppl_candidate:.4f} ± {r.ppl_candidate_err:.4f}")
    print(f"KLD        mean {format_kld(r.kld_mean)} ± {format_kld(r.kld_mean_err)}   median "
          f"{format_kld(r.kld_median)}   p99 {format_kld(r.kld_p99)}   max {format_kld(r.kld_max)}")
    print(f"same top   {100 * r.top1_agreement:.2f} %")
    print(f"Δp         mean {100 * r.delta_p_mean:+.3f} %   RMS {100 * r.delta_p_rms:.3f} %")
    for side, score in task.items():
        print(f"demo task  {side:9s}  {score.summary()}")
    return 0


def run_sweep(args) -> int:
    """``--ctx-sweep``: KLD and same-top-token at each length, and by position within the longest window."""
    from engine.analysis.evaluate import default_text_for, read_eval_text
    from engine.analysis.sweep import context_sweep, parse_lengths
    from engine.models.inspect import inspect_model

    lengths = parse_lengths(args.ctx_sweep, inspect_model(args.reference).context_length or None)
    text, text_path = read_eval_text(args.text) if args.text else default_text_for(args.reference)
    reporter = TextReporter() if not args.json and sys.stderr.isatty() else None
    n_ctx = max(lengths)
    with open_from_args(args.reference, args, n_ctx=n_ctx, partner=args.candidate) as ref, \
            open_from_args(args.candidate, args, n_ctx=n_ctx, partner=args.reference, kv_type=args.kv_type) as cand:
        result = context_sweep(ref, cand, lengths, text, text_name=str(text_path), max_windows=args.chunks,
                               reporter=reporter)
    if args.csv:
        result.write_csv(args.csv)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"reference  {result.reference}")
    print(f"candidate  {result.candidate} (KV cache {result.kv_type})")
    print(f"text       {text_path} ({result.text_tokens} tokens); {result.seconds:.1f} s")
    print(f"{'context':>8} {'windows':>8} {'scored':>8} {'mean KLD':>10} {'KLD p99':>10} {'same top':>9}")
    for p in result.points:
        print(f"{p.ctx:>8} {p.chunks:>8} {p.tokens:>8} {format_kld(p.kld_mean):>10} {format_kld(p.kld_p99):>10} "
              f"{100 * p.top1_agreement:>8.2f}%")
    print(f"by position in the window of {result.points[-1].ctx} (every position scored):")
    print(f"{'positions':>12} {'tokens':>8} {'mean KLD':>10} {'same top':>9}")
    for b in result.positions:
        print(f"{f'{b.start}-{b.end - 1}':>12} {b.tokens:>8} {format_kld(b.kld_mean):>10} {100 * b.top1_agreement:>8.2f}%")
    if args.csv:
        print(f"wrote {args.csv}")
    return 0
