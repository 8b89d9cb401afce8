"""nibble models: what is on this machine — the Hugging Face cache and Nibble's library."""

from __future__ import annotations

import json

from engine.core.units import human_bytes, table

NAME = "models"
HELP = "List models in the local Hugging Face cache and in Nibble's library (works offline)"
ORDER = 12


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--forget", metavar="ENTRY", help="remove a library entry (its files stay on disk)")
    p.add_argument("--add", metavar="PATH", help="add a local model folder or .gguf file to the library")


def run(args) -> int:
    from engine.models.resolve import GGUF, ORIGINAL

    from engine import hub
    from engine.models import library

    lib = library.default()
    if args.forget:
        lib.remove_entry(args.forget)
        print(f"removed {args.forget} from the library; no files were deleted")
        return 0
    if args.add:
        path = hub.resolve_model(args.add)
        kind = GGUF if path.suffix == ".gguf" else ORIGINAL
        entry = lib.add_entry(path, kind)
        print(f"{entry.id}  {entry.name}  {entry.path}")
        return 0
    cached = hub.list_cached_models()
    entries = lib.list_entries()
    names = {e.id: e.name for e in entries}
    if args.json:
        for m in cached:
            print(json.dumps({"where": "cache", "id": m.id, "size_bytes": m.size_bytes, "path": str(m.path),
                              "complete": m.complete, "has_safetensors": m.has_safetensors, "gguf_files": m.gguf_files}))
        for e in entries:
            print(json.dumps({"where": "library", **e.to_json(), "missing": e.missing}))
        return 0
    print(f"Hugging Face cache ({hub.cache_dir()}):")
    if cached:
        rows = [[m.id, human_bytes(m.size_bytes),
                 "ok" if m.complete else f"incomplete: nibble download {m.id}",
                 "safetensors" if m.has_safetensors else ("gguf" if m.gguf_files else "-")] for m in cached]
        print(table(rows, ["MODEL", "SIZE", "STATE", "WEIGHTS"]))
    else:
        print("  (empty)")
    print(f"\nLibrary ({lib.path}):")
    if entries:
        rows = []
        for e in entries:
            figs = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.figures.items()
                             if k != "file_size")
            rows.append([e.id, e.kind, e.name + (" (missing)" if e.missing else ""), e.type or "",
                         names.get(e.source, "") if e.source else "", e.created[:16].replace("T", " "),
                         human_bytes(e.figures.get("file_size")) if "file_size" in e.figures else "", figs])
        print(table(rows, ["ENTRY", "KIND", "NAME", "TYPE", "FROM", "CREATED", "SIZE", "FIGURES"]))
    else:
        print("  (empty)")
    return 0
