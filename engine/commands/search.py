"""nibble search: find text-generation models on the Hugging Face Hub."""

from __future__ import annotations

import json

from engine.commands import _args
from engine.core.units import human_bytes, human_count, parse_count, table

NAME = "search"
HELP = "Search the Hugging Face Hub for text-generation models"
ORDER = 10


def add_arguments(p):
    p.add_argument("query", nargs="?", default="", help="text the model id contains, e.g. qwen2.5 instruct")
    p.add_argument("--sort", choices=["downloads", "recent", "likes"], default="downloads")
    p.add_argument("--max-params", metavar="N", help="at most this many parameters, e.g. 8B")
    p.add_argument("--min-params", metavar="N", help="at least this many parameters, e.g. 1B")
    p.add_argument("--limit", type=_args.positive_int("models"), default=20)
    p.add_argument("--json", action="store_true", help="one JSON object per model")


def run(args) -> int:
    from engine import hub

    models = hub.search_models(
        args.query,
        sort=args.sort,
        max_params=parse_count(args.max_params) if args.max_params else None,
        min_params=parse_count(args.min_params) if args.min_params else None,
        limit=args.limit,
    )
    if args.json:
        for m in models:
            print(json.dumps({
                "id": m.id, "downloads": m.downloads, "likes": m.likes, "params": m.params,
                "safetensors_bytes": m.safetensors_bytes, "gated": m.gated, "license": m.license,
                "architecture": m.architecture, "family": m.family, "convertible": m.convertible,
                "last_modified": m.last_modified.isoformat() if m.last_modified else None,
            }))  # fmt: skip
        return 0
    if not models:
        print("no text-generation models found")
        return 0
    rows = [
        [m.id, human_count(m.params), human_bytes(m.safetensors_bytes),
         {True: "yes", False: "no", None: "?"}[m.convertible], f"{m.downloads:,}", f"{m.likes:,}",
         "gated" if m.gated else "", m.license or "", m.last_modified.date().isoformat() if m.last_modified else ""]
        for m in models
    ]  # fmt: skip
    print(table(rows, ["MODEL", "PARAMS", "SIZE", "CONVERTS", "DOWNLOADS", "LIKES", "ACCESS", "LICENSE", "UPDATED"]))
    return 0
