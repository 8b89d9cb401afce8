"""nibble inspect MODEL: what a model is, from its headers."""

from __future__ import annotations

import json

NAME = "inspect"
HELP = "show a model's architecture, size, tensors and tokenizer (headers only)"
ORDER = 10


def add_arguments(p):
    p.add_argument("model", help="Hugging Face model folder, .gguf file, or 'demo'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tensors", action="store_true", help="list every tensor")


def _human(n: float) -> str:
    for unit in ("", "K", "M", "B", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}" if unit else f"{n:.0f}"
        n /= 1000
    return f"{n:.1f}P"


def run(args) -> int:
    from engine.models.inspect import inspect_model

    info = inspect_model(args.model)
    if args.json:
        print(json.dumps(info.to_json(), indent=1))
        return 0
    print(f"{info.path}")
    print(f"  format        {info.format}{' ' + info.file_type if info.file_type else ''}")
    print(f"  architecture  {info.architecture}{'' if info.supported else '  (not supported by Nibble)'}")
    print(f"  parameters    {_human(info.parameters)} ({info.parameters:,})")
    print(f"  layers        {info.layers}, hidden size {info.hidden_size}")
    print(f"  context       {info.context_length:,} tokens")
    print(f"  vocabulary    {info.vocab_size:,} ({info.tokenizer})")
    print(f"  chat template {'yes' if info.chat_template else 'no'}")
    print(f"  size on disk  {info.file_bytes / 2**20:,.1f} MiB")
    dtypes: dict[str, int] = {}
    for t in info.tensors:
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + 1
    print(f"  tensors       {len(info.tensors)} (" + ", ".join(f"{k}: {v}" for k, v in sorted(dtypes.items())) + ")")
    if args.tensors:
        for t in info.tensors:
            print(f"    {t.name:48s} {t.dtype:6s} {'x'.join(map(str, t.shape))}")
    return 0
