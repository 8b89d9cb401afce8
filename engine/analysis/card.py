"""The model card of a quantized model: what it is, what it was made from and how, and what it cost.

A card is Markdown with the YAML header the Hugging Face Hub reads (``base_model``, ``base_model_relation:
quantized``, ``quantized_by``, ``license``, ``tags``), then a table of the files with their method, type,
size and bits per weight, the figures measured against the original (KL divergence, perplexity, same top
token, task accuracy), the memory to run each at common context lengths (from the estimate), and the
commands that made them. Figures that were not measured are left out, never invented.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.units import human_bytes

CONTEXTS = (2048, 8192, 32768)


@dataclass
class CardFile:
    """One file (or folder) described by a card."""

    name: str  # path in the repository (the first part of a split GGUF)
    method: str  # "GGUF" or "AWQ"
    type: str  # "Q4_K_M", "AWQ W4 g128", ...
    size_bytes: int
    bits_per_weight: float | None = None
    parts: int = 1
    figures: dict = field(default_factory=dict)  # kld_mean, kld_p99, ppl_reference, ppl_candidate, top1, task...
    memory: dict[int, int] = field(default_factory=dict)  # context -> bytes of RAM to run
    command: str = ""


@dataclass
class Card:
    title: str
    base_model: str | None  # Hub id of the original, when known
    license: str | None
    files: list[CardFile]
    calibration: str | None = None  # what the importance matrix / AWQ calibration read
    eval_text: str | None = None  # what the figures were measured on

    def yaml_header(self) -> str:
        lines = ["---"]
        if self.base_model:
            lines += ["base_model:", f"- {self.base_model}", "base_model_relation: quantized"]
        if self.license:
            lines.append(f"license: {json.dumps(self.license)}")
        lines.append("quantized_by: Nibble")
        tags = sorted({f.method.lower() for f in self.files} | {"nibble", "quantized"})
        lines.append("tags:")
        lines += [f"- {t}" for t in tags]
        if any(f.method == "GGUF" for f in self.files):
            lines.append("library_name: gguf")
        lines.append("---")
        return "\n".join(lines)

    def render(self) -> str:
        out = [self.yaml_header(), "", f"# {self.title}", ""]
        base = f"[{self.base_model}](https://huggingface.co/{self.base_model})" if self.base_model else "a local model"
        out.append(f"Quantized from {base} with Nibble; every figure below was measured "
                   "by Nibble against the original model.")
        out += ["", "## Files", "", "| file | method | type | size | bits/weight |", "|---|---|---|---|---|"]
        for f in self.files:
            bpw = f"{f.bits_per_weight:.2f}" if f.bits_per_weight else "—"
            name = f.name + (f" (+{f.parts - 1} parts)" if f.parts > 1 else "")
            out.append(f"| {name} | {f.method} | {f.type} | {human_bytes(f.size_bytes)} | {bpw} |")
        measured = [f for f in self.files if f.figures]
        if measured:
            out += ["", "## What quantization cost", ""]
            if self.eval_text:
                out.append(f"Measured on {self.eval_text} (llama-perplexity's method: windows with BOS, the second "
                           "half of each window scored).")
                out.append("")
            out += ["| file | mean KLD | 99th pct KLD | same top token | PPL original | PPL quantized | task accuracy |",
                    "|---|---|---|---|---|---|---|"]
            for f in measured:
                g = f.figures
                out.append(f"| {f.name} | {_num(g.get('kld_mean'), 5)} | {_num(g.get('kld_p99'), 4)} | "
                           f"{_pct(g.get('top1'))} | {_num(g.get('ppl_reference'), 3)} | "
                           f"{_num(g.get('ppl_candidate'), 3)} | {_pct(g.get('task_accuracy'))} |")
        with_memory = [f for f in self.files if f.memory]
        if with_memory:
            ctxs = sorted({c for f in with_memory for c in f.memory})
            out += ["", "## Memory to run (llama.cpp, CPU, f16 KV cache)", "",
                    "| file | " + " | ".join(f"{c:,} tokens" for c in ctxs) + " |",
                    "|---|" + "---|" * len(ctxs)]
            for f in with_memory:
                out.append(f"| {f.name} | " + " | ".join(human_bytes(f.memory.get(c)) for c in ctxs) + " |")
        commands = [f.command for f in self.files if f.command]
        if commands or self.calibration:
            out += ["", "## How it was made", ""]
            if self.calibration:
                out += [f"Calibration text (importance matrix / AWQ): {self.calibration}", ""]
            if commands:
                out += ["```", *commands, "```"]
        out += ["", "## Use", ""]
        gguf_files = [f for f in self.files if f.method == "GGUF"]
        if gguf_files:
            out += ["```", f"llama-cli -m {gguf_files[0].name}", "```"]
        if any(f.method == "AWQ" for f in self.files):
            out += ["The AWQ folder loads in transformers and vLLM (AutoAWQ GEMM layout, 4-bit)."]
        return "\n".join(out).rstrip() + "\n"


def _num(x, digits: int) -> str:
    if x is None:
        return "—"
    x = float(x)
    return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.1f} %"


def license_of(folder: Path | None) -> str | None:
    """The license a model folder declares: its README's YAML header, else config.json's ``license``."""
    if folder is None or not Path(folder).is_dir():
        return None
    readme = Path(folder) / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            for line in text.split("\n---", 1)[0].splitlines()[1:]:
                key, _, value = line.partition(":")
                if key.strip() == "license" and value.strip():
                    return value.strip().strip("'\"")
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        return cfg.get("license")
    except (OSError, ValueError):
        return None
