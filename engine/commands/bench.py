"""``nibble bench MODEL``: prompt and generation speed, time to first token, memory."""

from __future__ import annotations

import json
import sys

from engine.commands import _args
from engine.commands._models import add_runtime_arguments, open_from_args, quiet_libraries
from engine.core.progress import TextReporter

NAME = "bench"
HELP = "measure prompt-processing and generation speed, time to first token and memory of a model"
ORDER = 44


def add_arguments(parser) -> None:
    parser.add_argument("model", help="Hugging Face folder, .gguf file or AWQ folder")
    parser.add_argument("-p", "--n-prompt", type=_args.positive_int("tokens"), default=512, help="prompt tokens (default 512, as llama-bench)")
    parser.add_argument("-n", "--n-gen", type=_args.positive_int("tokens"), default=128, help="generated tokens (default 128, as llama-bench)")
    parser.add_argument("-r", "--repetitions", type=_args.positive_int("runs"), default=5, help="timed runs of each test (default 5)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run of each test")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    add_runtime_arguments(parser, ctx_default=0, ctx_help="context length (default: prompt + generated tokens)")


def run(args) -> int:
    from engine.analysis.bench import bench

    quiet_libraries()
    n_ctx = args.ctx or max(args.n_prompt, args.n_gen) + 8
    reporter = TextReporter() if not args.json and sys.stderr.isatty() else None
    with open_from_args(args.model, args, n_ctx=n_ctx) as rt:
        r = bench(rt, n_prompt=args.n_prompt, n_gen=args.n_gen, repetitions=args.repetitions,
                  warmup=not args.no_warmup, reporter=reporter)
    if args.json:
        print(json.dumps(r.to_json(), indent=2))
        return 0
    mib = 1024**2
    print(f"model      {r.model} ({r.kind}, {r.device}, threads {r.threads or 'default'})")
    print(f"pp{r.n_prompt:<7} {r.pp_tokens_per_s:10.2f} ± {r.pp_std:.2f} tokens/s")
    print(f"tg{r.n_gen:<7} {r.tg_tokens_per_s:10.2f} ± {r.tg_std:.2f} tokens/s")
    print(f"first token {1000 * r.ttft_s:9.1f} ms after a {r.n_prompt}-token prompt")
    print(f"memory     RSS {r.rss_bytes / mib:.0f} MiB (peak {r.peak_rss_bytes / mib:.0f} MiB)"
          + (f", VRAM {r.vram_bytes / mib:.0f} MiB" if r.vram_bytes is not None else ""))
    return 0
