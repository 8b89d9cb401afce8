"""Publishing quantized outputs to the Hub with a model card that carries Nibble's measured figures.

``publish(outputs, repo_id)``: checks every output and the user's right to write to the repository before
anything is written; builds the card (base model, method and type per file, size, bits per weight, measured
KL divergence / perplexity / same top token, memory to run, the commands, the calibration text, the base's
license); splits GGUF files above the split size into llama.cpp's split format in a temporary folder beside
them; uploads everything in one commit. Local files are never changed; the temporary parts are removed.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.analysis.card import CONTEXTS, Card, CardFile, license_of
from engine.core.errors import NibbleError
from engine.core.progress import Reporter
from engine.models import library
from engine.models.inspect import file_type_name, gguf_field, open_gguf
from engine.runtime import model_kind

#: The Hub advises files under 50 GB.
DEFAULT_SPLIT_BYTES = 50 * 1000**3
if TYPE_CHECKING:
    from engine.hub.upload import Published

_CACHE_FOLDER = re.compile(r"models--([^/]+)--([^/]+)/snapshots/")


@dataclass
class Output:
    path: Path
    kind: str  # "gguf" or "awq"
    entry: library.Entry | None
    original: Path | None
    base_model: str | None


def hub_id_of(folder: Path | None) -> str | None:
    """The Hub id of a model folder in the Hugging Face cache (``.../models--owner--name/snapshots/...``)."""
    if folder is None:
        return None
    m = _CACHE_FOLDER.search(Path(folder).resolve().as_posix() + "/")
    return f"{m.group(1)}/{m.group(2)}" if m else None


def describe_output(path: str | Path, base_model: str | None = None) -> Output:
    """What ``path`` is and where it came from (the library's link to its original), or a one-line error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NibbleError(f"{path}: no such file or folder; give a GGUF file or an AWQ folder Nibble made")
    kind = model_kind(path.resolve())
    if kind not in ("gguf", "awq"):
        raise NibbleError(f"{path} is an unquantized model; publish the GGUF files or AWQ folders made from it")
    lib = library.default()
    entry = lib.find_path(path)
    original = hub = None
    if entry is not None and entry.source:
        try:
            src = lib.get(entry.source)
            original, hub = Path(src.path), src.hub_id
        except NibbleError:
            pass
    return Output(path=path.resolve(), kind=kind, entry=entry, original=original,
                  base_model=base_model or hub or hub_id_of(original))


def _gguf_file(out: Output, parts: int, name: str) -> CardFile:
    reader = open_gguf(out.path)
    params = sum(int(t.n_elements) for t in reader.tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    qtype = file_type_name(gguf_field(reader, "general.file_type")) or (out.entry.type if out.entry else "") or "?"
    memory = {}
    try:
        from engine.estimate import estimate, load_plan

        plan = load_plan(out.path)
        trained = int(gguf_field(reader, f"{gguf_field(reader, 'general.architecture')}.context_length", 0) or 0)
        for ctx in [c for c in CONTEXTS if not trained or c <= trained] or [trained]:
            memory[ctx] = estimate(plan, qtype, ctx=ctx).run.ram_bytes
    except NibbleError:
        memory = {}
    return CardFile(name=name, method="GGUF", type=qtype, size_bytes=out.path.stat().st_size,
                    bits_per_weight=8 * tensor_bytes / params if params else None, parts=parts,
                    figures=_figures(out), memory=memory, command=_command(out))


def _awq_file(out: Output, name: str) -> CardFile:
    cfg = json.loads((out.path / "config.json").read_text(encoding="utf-8"))
    qc = cfg.get("quantization_config") or {}
    size = sum(p.stat().st_size for p in out.path.rglob("*") if p.is_file())
    return CardFile(name=name, method="AWQ", type=f"AWQ W{qc.get('bits', 4)} g{qc.get('group_size', 128)}",
                    size_bytes=size, bits_per_weight=None, figures=_figures(out), command=_command(out))


def _figures(out: Output) -> dict:
    figs = dict(out.entry.figures) if out.entry else {}
    return {k: figs[k] for k in ("kld_mean", "kld_p99", "top1", "ppl_reference", "ppl_candidate", "task_accuracy")
            if figs.get(k) is not None}


def _command(out: Output) -> str:
    if out.entry is None or not out.entry.type:
        return ""
    src = out.base_model or (out.original.name if out.original else "MODEL")
    return f"nibble quantize {src} --type {out.entry.type} --out {out.path.name}"


def build_card(outputs: list[Output], repo_id: str, names: dict[Path, tuple[str, int]]) -> Card:
    files = []
    for out in outputs:
        name, parts = names[out.path]
        files.append(_gguf_file(out, parts, name) if out.kind == "gguf" else _awq_file(out, name))
    bases = {o.base_model for o in outputs if o.base_model}
    base = bases.pop() if len(bases) == 1 else None
    originals = [o.original for o in outputs if o.original is not None]
    evals = {o.entry.figures.get("eval_text") for o in outputs if o.entry and o.entry.figures.get("eval_text")}
    cals = {o.entry.figures.get("calibration") for o in outputs if o.entry and o.entry.figures.get("calibration")}
    return Card(title=repo_id.split("/")[-1], base_model=base,
                license=license_of(originals[0]) if originals else None, files=files,
                calibration=", ".join(sorted(cals)) or None, eval_text=", ".join(sorted(evals)) or None)


def publish(outputs: list[str | Path], repo_id: str, *, private: bool = False, gated: bool = False,
            split_bytes: int = DEFAULT_SPLIT_BYTES, base_model: str | None = None, token: str | None = None,
            dry_run_dir: str | Path | None = None, reporter: Reporter | None = None) -> Published | list[Path]:
    """Upload ``outputs`` to ``repo_id`` with a card; ``dry_run_dir``: write the card and parts there instead
    and return their paths (nothing is sent)."""
    from engine.hub.upload import check_target, publish_files  # the Hub client only where something is sent

    reporter = reporter or Reporter()
    if not outputs:
        raise NibbleError("give at least one GGUF file or AWQ folder to publish")
    if split_bytes <= 0:
        raise NibbleError(f"split size {split_bytes} must be a positive size, e.g. 50GB")
    described = [describe_output(p, base_model) for p in outputs]
    if dry_run_dir is None:
        token, _ = check_target(repo_id, token)  # before any work: a wrong repository costs nothing
    staging = Path(dry_run_dir) if dry_run_dir else Path(tempfile.mkdtemp(prefix=".nibble-publish-",
                                                                          dir=described[0].path.parent))
    try:
        files: list[tuple[Path, str]] = []
        names: dict[Path, tuple[str, int]] = {}
        for out in described:
            if out.kind == "gguf":
                from engine.gguf.split import split_gguf

                parts = split_gguf(out.path, split_bytes, staging, reporter) if out.path.stat().st_size > split_bytes \
                    else [out.path]
                files += [(p, p.name) for p in parts]
                names[out.path] = (parts[0].name, len(parts))
            else:
                for p in sorted(out.path.rglob("*")):
                    if p.is_file() and p.name != "README.md" and not p.name.startswith("."):
                        files.append((p, f"{out.path.name}/{p.relative_to(out.path).as_posix()}"))
                names[out.path] = (out.path.name + "/", 1)
        card = staging / "README.md"
        card.write_text(build_card(described, repo_id, names).render(), encoding="utf-8")
        files.append((card, "README.md"))
        if dry_run_dir:
            return [p for p, _ in files]
        return publish_files(repo_id, files, private=private, gated=gated, token=token, reporter=reporter)
    finally:
        if not dry_run_dir:
            shutil.rmtree(staging, ignore_errors=True)
