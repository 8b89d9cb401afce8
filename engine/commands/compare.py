"""``nibble compare A B --prompt TEXT``: the same prompt through two models, and where they part ways.
``nibble compare A B --tasks [FILE]``: both models answer a task set; accuracy side by side."""

from __future__ import annotations

import json
import sys

from engine.commands import _args
from engine.commands._models import add_runtime_arguments, open_from_args, quiet_libraries
from engine.core.errors import NibbleError
from engine.core.progress import TextReporter
from engine.core.units import format_kld

DEMO = "demo"
NAME = "compare"
HELP = "run one prompt through two models (greedy) and show where their outputs diverge"
ORDER = 43


def add_arguments(parser) -> None:
    parser.add_argument("a", help="model A, the reference (Hugging Face folder, .gguf or AWQ folder)")
    parser.add_argument("b", help="model B, judged against A")
    parser.add_argument("--prompt", type=_args.text, default=None, help="the prompt text")
    parser.add_argument("--tasks", nargs="?", const=DEMO, default=None, metavar="FILE",
                        help="instead of one prompt, a task set: a JSONL file of {\"prompt\": ..., \"answer\": ...} "
                             "lines, or (no FILE) the demo's held-out questions; both models answer each, greedy")
    parser.add_argument("--task-questions", type=_args.positive_int("questions"), default=100, metavar="N",
                        help="with --tasks and no FILE: how many held-out demo questions (default 100)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in A's chat template as a user turn")
    parser.add_argument("--system", type=_args.text, default=None, metavar="TEXT", help="system prompt (with --chat)")
    parser.add_argument("--max-tokens", type=_args.positive_int("tokens"), default=64, help="tokens to generate (default 64)")
    parser.add_argument("--temperature", type=_args.temperature, default=0.0, help="default 0: greedy")
    parser.add_argument("--top-p", type=_args.probability, default=1.0)
    parser.add_argument("--seed", type=_args.seed, default=0)
    parser.add_argument("--speed", action="store_true",
                        help="also measure speed and memory of both, the original through the quantized model's "
                             "runtime (an unquantized GGUF of it, made once and cached, when B is a GGUF)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_runtime_arguments(parser, ctx_default=2048)


def run(args) -> int:
    from engine.analysis.compare import compare

    quiet_libraries()
    if args.speed and args.tasks is None and args.prompt is None:
        return run_speed(args)
    if args.tasks is not None:
        return run_tasks(args)
    if args.prompt is None:
        raise NibbleError("compare needs a prompt, a task set, or a speed measurement to run; give one")
    with open_from_args(args.a, args, partner=args.b) as a, open_from_args(args.b, args, partner=args.a) as b:
        r = compare(a, b, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                    seed=args.seed, chat=args.chat, system=args.system)
    if args.json:
        print(json.dumps(r.to_json(), indent=2, ensure_ascii=False))
        return 0
    out = sys.stdout
    print(f"── A: {r.a}", file=out)
    print(r.text_a, file=out)
    print(f"── B: {r.b}", file=out)
    print(r.text_b, file=out)
    print("──", file=out)
    if r.first_divergence is None:
        print(f"identical outputs ({len(r.tokens_a)} tokens)", file=out)
    else:
        print(f"first divergence at generated token {r.first_divergence}: "
              f"A {r.divergence_text_a!r} vs B {r.divergence_text_b!r}", file=out)
    print(f"KL divergence of B against A along A's output: mean {format_kld(r.kld_mean)}, max {format_kld(r.kld_max)}; "
          f"same top token {100 * r.top1_agreement:.1f} %", file=out)
    return 0


def run_tasks(args) -> int:
    from engine.analysis.taskset import DEMO_TASKS, compare_tasks, demo_tasks, read_tasks

    if args.tasks == DEMO:
        items, name = demo_tasks(args.task_questions), DEMO_TASKS
    else:
        items, name = read_tasks(args.tasks), args.tasks
    reporter = TextReporter() if not args.json and sys.stderr.isatty() else None
    with open_from_args(args.a, args, partner=args.b) as a, open_from_args(args.b, args, partner=args.a) as b:
        r = compare_tasks(a, b, items, task_name=name, max_tokens=args.max_tokens, reporter=reporter)
    if args.json:
        print(json.dumps(r.to_json(), indent=2, ensure_ascii=False))
        return 0
    sa, sb = r.score("a"), r.score("b")
    print(f"A  {r.a}\nB  {r.b}\ntasks  {r.task_name}: {sa.total} questions, greedy ({r.seconds:.1f} s)")
    print(f"{'':24} {'A':>16} {'B':>16}")
    rows = [(c, r.score("a", c), r.score("b", c)) for c in r.categories] + [("overall", sa, sb)]
    for label, x, y in rows:
        print(f"{label:24} {f'{x.accuracy:.1%} ({x.correct}/{x.total})':>16} {f'{y.accuracy:.1%} ({y.correct}/{y.total})':>16}")
    diff = r.differing
    print(f"answers differ on {len(diff)} of {sa.total} questions" + (":" if diff else ""))
    for i in diff:
        mark = lambda ok: "right" if ok else "wrong"  # noqa: E731
        prompt = i.prompt if len(i.prompt) <= 70 else i.prompt[:67] + "..."
        print(f"- {prompt}  (answer {i.answer}; mean KLD {format_kld(i.kld_mean)})")
        print(f"    A ({mark(i.correct_a)}): {i.reply_a}")
        print(f"    B ({mark(i.correct_b)}): {i.reply_b}")
    return 0


def run_speed(args) -> int:
    from engine.pipelines.speed import compare_speed

    reporter = TextReporter() if not args.json and sys.stderr.isatty() else None
    r = compare_speed(args.a, args.b, device=args.device, threads=args.threads, reporter=reporter)
    if args.json:
        print(json.dumps(r.to_json(), indent=2))
        return 0
    mib = 1024**2
    for label, side in (("A", r.original), ("B", r.quantized)):
        b = side.bench
        print(f"{label}  {side.model}\n   runtime {side.runtime}; prompt {b.pp_tokens_per_s:,.0f} tokens/s, "
              f"generation {b.tg_tokens_per_s:,.0f} tokens/s, memory {b.peak_rss_bytes / mib:,.0f} MiB (peak RSS)")
    print(r.note)
    return 0
