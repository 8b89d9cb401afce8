"""``nibble publish OUTPUT... --repo USER/NAME``: upload quantized models to the Hub with a measured model card."""

from __future__ import annotations

import sys

NAME = "publish"
HELP = "upload GGUF files or AWQ folders to a Hub model repository, with a model card of Nibble's measurements"
ORDER = 75


def add_arguments(p) -> None:
    p.add_argument("outputs", nargs="+", metavar="OUTPUT", help="GGUF files or AWQ folders Nibble made")
    p.add_argument("--repo", required=True, metavar="USER/NAME", help="the Hub model repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--gated", action="store_true", help="ask users to accept the terms before downloading")
    p.add_argument("--split-size", default="50GB", metavar="SIZE",
                   help="split GGUF files above this size in llama.cpp's split format (default 50GB, as the Hub advises)")
    p.add_argument("--base", metavar="HUB_ID", help="the original model on the Hub (default: from Nibble's library)")
    p.add_argument("--dry-run", metavar="FOLDER",
                   help="write the card and any split parts to FOLDER instead of uploading")


def run(args) -> int:
    from pathlib import Path

    from engine.core.errors import NibbleError
    from engine.core.progress import TextReporter
    from engine.core.units import parse_size
    from engine.pipelines.publish import publish

    from huggingface_hub.utils import logging as hf_logging

    from huggingface_hub.utils import disable_progress_bars

    hf_logging.set_verbosity_error()  # its retry notices are not for the user: Nibble says what happened, once
    disable_progress_bars()  # Nibble reports progress itself
    split = parse_size(args.split_size, "--split-size")
    if args.dry_run:
        folder = Path(args.dry_run).expanduser()
        if not folder.is_dir():
            raise NibbleError(f"--dry-run {folder}: no such folder; create it first")
    result = publish(args.outputs, args.repo, private=args.private, gated=args.gated, split_bytes=split,
                     base_model=args.base, dry_run_dir=args.dry_run, reporter=TextReporter(sys.stderr))
    if args.dry_run:
        for p in result:
            print(p)
        return 0
    what = "created" if result.created else "updated"
    print(f"{what} {result.url} ({', '.join(result.files)})")
    return 0
