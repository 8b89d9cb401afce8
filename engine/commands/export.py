"""``nibble export FILE.gguf --to ollama|lmstudio``: hand a GGUF to Ollama or LM Studio."""

from __future__ import annotations

NAME = "export"
HELP = "hand a GGUF file to Ollama (writes a Modelfile, runs ollama create) or LM Studio (its models folder)"
ORDER = 76


def add_arguments(p) -> None:
    p.add_argument("gguf", metavar="FILE.gguf", help="the GGUF file")
    p.add_argument("--to", required=True, choices=["ollama", "lmstudio"], help="which app")
    p.add_argument("--name", help="Ollama: the model name (default: from the file name); LM Studio: the model folder")
    p.add_argument("--no-create", action="store_true", help="Ollama: only write the Modelfile")
    p.add_argument("--publisher", default="nibble", help="LM Studio: the publisher folder (default nibble)")
    p.add_argument("--models-dir", metavar="FOLDER", help="LM Studio: its models folder (default: found)")


def run(args) -> int:
    from engine.pipelines.handoff import use_in_lmstudio, use_in_ollama

    if args.to == "ollama":
        done = use_in_ollama(args.gguf, args.name, run=not args.no_create)
    else:
        done = use_in_lmstudio(args.gguf, args.publisher, args.name, args.models_dir)
    print(done.message)
    return 0
