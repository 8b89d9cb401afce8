"""The bad inputs :mod:`test_reliability` drives through the CLI, and the workspace they act on.

Every case names its kind (the rows of the table in benchmarks/RESULTS.md), the command line (``{ws}``
stands for the workspace), and a fragment the one error line must hold: the setting or file, and often
what to do.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    kind: str
    argv: tuple[str, ...]
    expect: str
    stdin: str = ""

    @property
    def id(self) -> str:
        return " ".join(self.argv).replace("{ws}/", "")[:90]


def _c(kind: str, line: str, expect: str, stdin: str = "") -> Case:
    return Case(kind, tuple(line.split()), expect, stdin)


RANGE, USAGE, PATH, CORRUPT, OUTPUT, CODE, TEXT = (
    "option out of range", "usage mistake", "missing or wrong path", "truncated or corrupt file",
    "output that would destroy a file", "repository code", "invalid text")

CASES = [
    # every option with a range, in every command
    *[_c(RANGE, f"estimate {{ws}}/m {o}", e) for o, e in [
        ("--ctx -1", "--ctx -1: must be a positive number of tokens"), ("--ctx 0", "--ctx 0:"),
        ("--ctx abc", "--ctx abc: must be a whole number"), ("--gpu-layers -1", "--gpu-layers -1: must be 0 or more")]],
    *[_c(RANGE, f"stats {{ws}}/m {{ws}}/q.gguf {o}", e) for o, e in [
        ("--bins 0", "--bins 0: must be a positive number of bins"), ("--bins -5", "--bins -5"),
        ("--top -3", "--top -3: must be 0 or more")]],
    *[_c(RANGE, f"bench {{ws}}/q.gguf {o}", e) for o, e in [
        ("-r 0", "--repetitions 0: must be a positive number of runs"), ("-p 0", "--n-prompt 0"), ("-n -1", "--n-gen -1"),
        ("--ctx -1", "--ctx -1"), ("--threads 0", "--threads 0: must be a positive number of threads"),
        ("--gpu-layers -2", "--gpu-layers -2: must be 0 or more layers, or -1 for all")]],
    *[_c(RANGE, f"chat {{ws}}/q.gguf {o}", e) for o, e in [
        ("--ctx 0", "--ctx 0: must be a positive number of tokens"), ("--max-tokens 0", "--max-tokens 0"),
        ("--temperature -1", "--temperature -1: must be 0 (greedy) or more"), ("--top-p 0", "--top-p 0"),
        ("--top-p 1.5", "--top-p 1.5: must be more than 0 and at most 1"), ("--seed -1", "--seed -1"),
        ("--threads -4", "--threads -4"), ("--temperature nan", "--temperature nan: must be a finite number")]],
    *[_c(RANGE, f"compare {{ws}}/q.gguf {{ws}}/q.gguf --prompt hi {o}", e) for o, e in [
        ("--max-tokens -1", "--max-tokens -1: must be a positive number of tokens"), ("--ctx 0", "--ctx 0"),
        ("--top-p 2", "--top-p 2"), ("--threads -4", "--threads -4")]],
    *[_c(RANGE, f"eval {{ws}}/q.gguf {{ws}}/q.gguf {o}", e) for o, e in [
        ("--chunks 0", "--chunks 0: must be a positive number of windows"), ("--task-questions 0", "--task-questions 0"),
        ("--ctx -5", "--ctx -5")]],
    *[_c(RANGE, f"quantize {{ws}}/m --out {{ws}}/out/x.gguf {o}", e) for o, e in [
        ("--type Q4_0 --imatrix-chunks 0", "--imatrix-chunks 0: must be a positive number of windows"),
        ("--type Q4_0 --threads -4", "--threads -4: must be a positive number of threads"),
        ("--type AWQ --bits 0", "--bits 0"), ("--type AWQ --group-size 0", "--group-size 0"),
        ("--type AWQ --samples 0", "--samples 0"), ("--type AWQ --seqlen 0", "--seqlen 0")]],
    *[_c(RANGE, f"quantize {{ws}}/m --out {{ws}}/out/awq {o}", e) for o, e in [
        ("--type AWQ --seqlen 100000", "--seqlen: sample length 100000 is longer than the model's context"),
        ("--type AWQ --bits 3", "--bits: 3 bits: AWQ in the GEMM layout stores 4-bit weights only"),
        ("--type AWQ --group-size 100", "--group-size: group size 100 must be a positive multiple of 8"),
        ("--type AWQ --device quantum", "--device: device 'quantum' is not one of cpu, cuda, mps")]],
    _c(RANGE, "search qwen --limit 0", "--limit 0: must be a positive number of models"),
    _c(RANGE, "search qwen --max-params 1.2.3B", "'1.2.3B' is not a parameter count"),
    _c(RANGE, "selftest --tokens 0", "--tokens 0"), _c(RANGE, "selftest --threads 0", "--threads 0"),
    # usage
    _c(USAGE, "frobnicate", "invalid choice: 'frobnicate'"),
    _c(USAGE, "quantize {ws}/m", "the following arguments are required: --out"),
    _c(USAGE, "quantize {ws}/m --type Q9_9 --out {ws}/out/x.gguf", "--type: quant type 'Q9_9' is unknown"),
    _c(USAGE, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.txt", "must end in .gguf"),
    _c(USAGE, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --imatrix {ws}/i.gguf --calibration default",
       "--calibration not allowed with argument --imatrix"),
    _c(USAGE, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --save-imatrix {ws}/out/i.gguf",
       "--save-imatrix: saved importance matrix {ws}/out/i.gguf: there is no importance matrix to save; compute one from calibration text"),
    _c(USAGE, "estimate {ws}/m --kv-type q2", "--kv-type: invalid choice: 'q2'"),
    _c(USAGE, "eval {ws}/q.gguf {ws}/q.gguf --task maybe", "--task: invalid choice"),
    _c(USAGE, "download ../../etc", "'../../etc' is not a Hub model id; write it as owner/name"),
    _c(USAGE, "download acme/x --revision ../../refs", "--revision: revision ../../refs: not a branch, tag or commit name"),
    _c(USAGE, "search qwen --sort sideways", "--sort: invalid choice"),
    # missing or wrong paths
    _c(PATH, "quantize {ws}/nothing --type Q4_0 --out {ws}/out/x.gguf", "{ws}/nothing: no such file or folder"),
    _c(PATH, "quantize {ws}/m --type Q4_0 --out {ws}/nofolder/x.gguf", "the folder {ws}/nofolder does not exist"),
    _c(PATH, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --calibration {ws}/none.txt", "--calibration: calibration text {ws}/none.txt: file not found"),
    _c(PATH, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --imatrix {ws}/none.dat", "--imatrix: importance matrix {ws}/none.dat: file not found"),
    _c(PATH, "quantize {ws}/cal.txt --type Q4_0 --out {ws}/out/x.gguf", "neither a GGUF file nor a model folder"),
    _c(PATH, "inspect {ws}/nothing.gguf", "nothing.gguf"),
    _c(PATH, "chat {ws}/nothing.gguf", "nothing.gguf: no such file or folder"),
    _c(PATH, "eval {ws}/m {ws}/nothing.gguf", "nothing.gguf: no such file or folder"),
    _c(PATH, "eval {ws}/q.gguf {ws}/q.gguf --text {ws}/none.txt", "none.txt"),
    _c(PATH, "stats {ws}/m {ws}/nothing.gguf", "nothing.gguf"),
    _c(PATH, "stats {ws}/m {ws}/m", "is not quantized"),
    _c(PATH, "bench {ws}/empty", "{ws}/empty is a folder without config.json"),
    _c(PATH, "compare {ws}/cal.txt {ws}/q.gguf --prompt hi", "cal.txt is not a GGUF file"),
    _c(PATH, "estimate {ws}/cal.txt", "cal.txt: not a GGUF file"),
    _c(PATH, "models --add {ws}/nothing", "nothing"),
    _c(PATH, "selftest --model {ws}/nothing", "nothing"),
    # truncated and corrupt files of each kind
    _c(CORRUPT, "quantize {ws}/trunc-st --type Q4_0 --out {ws}/out/x.gguf", "model.safetensors is truncated"),
    _c(CORRUPT, "quantize {ws}/garbage-st --type Q4_0 --out {ws}/out/x.gguf", "model.safetensors is not a valid safetensors file"),
    _c(CORRUPT, "inspect {ws}/trunc-st", "model.safetensors is truncated"),
    _c(CORRUPT, "quantize {ws}/badjson --type Q4_0 --out {ws}/out/x.gguf", "config.json is not valid JSON"),
    _c(CORRUPT, "inspect {ws}/badjson", "config.json is not valid JSON"),
    _c(CORRUPT, "estimate {ws}/badjson", "config.json is not valid JSON"),
    _c(CORRUPT, "quantize {ws}/shardless --type Q4_0 --out {ws}/out/x.gguf", "download"),
    _c(CORRUPT, "quantize {ws}/nan --type Q4_0 --out {ws}/out/x.gguf", "holds NaN or infinite values, so the weights are damaged"),
    _c(CORRUPT, "quantize {ws}/nan --type AWQ --out {ws}/out/awq --samples 1 --seqlen 16 --calibration {ws}/cal-long.txt",
       "model.safetensors: tensor model.layers.0.mlp.up_proj.weight holds NaN or infinite values"),
    _c(CORRUPT, "quantize {ws}/nan --type Q4_K_M --awq --out {ws}/out/x.gguf --samples 1 --seqlen 16 --calibration {ws}/cal-long.txt",
       "holds NaN or infinite values"),
    # config.json edited so that it no longer describes the weights (FFN twice as wide)
    _c(CORRUPT, "quantize {ws}/mismatch --type Q4_0 --out {ws}/out/x.gguf",
       "config.json: tensor model.layers.0.mlp.down_proj.weight has shape"),
    _c(CORRUPT, "quantize {ws}/mismatch --type AWQ --out {ws}/out/awq --samples 1 --seqlen 16 --calibration {ws}/cal-long.txt",
       "model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape"),
    _c(CORRUPT, "quantize {ws}/nan.gguf --type Q4_0 --out {ws}/out/x.gguf", "nan.gguf: tensor blk.0.ffn_up.weight holds NaN"),
    _c(CORRUPT, "quantize {ws}/q.gguf --type Q4_0 --out {ws}/out/x.gguf", "is already quantized (q8_0)"),
    _c(CORRUPT, "inspect {ws}/trunc.gguf", "trunc.gguf"),
    _c(CORRUPT, "chat {ws}/trunc.gguf", "trunc.gguf"),
    _c(CORRUPT, "bench {ws}/text.gguf", "text.gguf"),
    _c(CORRUPT, "stats {ws}/m {ws}/trunc.gguf", "trunc.gguf"),
    _c(CORRUPT, "estimate {ws}/trunc.gguf", "trunc.gguf"),
    _c(CORRUPT, "quantize {ws}/trunc.gguf --type Q4_0 --out {ws}/out/x.gguf", "trunc.gguf"),
    _c(CORRUPT, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --imatrix {ws}/garbage.dat", "garbage.dat"),
    _c(CORRUPT, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --calibration {ws}/tiny.txt", "only 20 bytes; give at least a few pages"),
    _c(CORRUPT, "quantize {ws}/m --type AWQ --out {ws}/out/awq --calibration {ws}/binary.txt", "is not UTF-8 text"),
    _c(CORRUPT, "eval {ws}/q.gguf {ws}/q.gguf --text {ws}/binary.txt", "binary.txt"),
    _c(CORRUPT, "chat {ws}/awq-bad", "only 4-bit AWQ in the GEMM layout is supported"),
    _c(CORRUPT, "inspect {ws}/gpt2mix", "contradicts itself (model_type 'gpt2' but architectures LlamaForCausalLM)"),
    _c(CORRUPT, "quantize {ws}/gpt2mix --type Q4_0 --out {ws}/out/x.gguf", "contradicts itself"),
    _c(CORRUPT, "chat {ws}/badtok", "tokenizer"),
    # outputs that would destroy a file
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --calibration default --save-imatrix {ws}/m/model.safetensors",
       "--save-imatrix: saved importance matrix {ws}/m/model.safetensors is an input of this job"),
    _c(OUTPUT, "quantize {ws}/q.gguf --type Q4_0 --out {ws}/q.gguf", "--out: output path {ws}/q.gguf is an input of this job"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --calibration default --save-imatrix {ws}/q.gguf",
       "--save-imatrix: saved importance matrix {ws}/q.gguf exists and is not an importance matrix"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/out/x.gguf --calibration {ws}/cal-long.txt --save-imatrix {ws}/cal-long.txt",
       "--save-imatrix: saved importance matrix {ws}/cal-long.txt is an input of this job"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/i.gguf", "--out: output path {ws}/i.gguf exists and is not a GGUF model"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/fake.gguf", "--out: output path {ws}/fake.gguf exists and is not a GGUF model"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/dir.gguf", "--out: output path {ws}/dir.gguf is a folder; give a file name"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/loopa.gguf", "goes through a loop of symbolic links"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_0 --out {ws}/link.gguf", "--out: output path {ws}/link.gguf is a symbolic link"),
    _c(OUTPUT, "quantize {ws}/m --type AWQ --out {ws}/cal.txt", "--out: output path {ws}/cal.txt is a file; AWQ writes a folder"),
    _c(OUTPUT, "quantize {ws}/m --type AWQ --out {ws}/linkdir", "--out: output path {ws}/linkdir is a symbolic link"),
    _c(OUTPUT, "quantize {ws}/m --type AWQ --out {ws}/m", "--out: output path {ws}/m is an input of this job"),
    _c(OUTPUT, "quantize {ws}/m --type AWQ --out {ws}/notmodel", "--out: output path {ws}/notmodel is a folder that is not a model"),
    _c(OUTPUT, "quantize {ws}/m --type AWQ --out {ws}/nofolder/awq", "the folder {ws}/nofolder does not exist"),
    _c(OUTPUT, "quantize {ws}/m --type Q9 --awq --out {ws}/out/x.gguf", "--type: quant type 'Q9' is unknown"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_K_M --awq --out {ws}/out/x.bin", "must end in .gguf"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_K_M --awq --out {ws}/i.gguf", "exists and is not a GGUF model"),
    _c(OUTPUT, "quantize {ws}/m --type Q4_K_M --awq --out {ws}/nofolder/x.gguf", "the folder {ws}/nofolder does not exist"),
    # repository code
    _c(CODE, "inspect {ws}/unknown-arch", "'acme_net', which transformers does not know"),
    _c(CODE, "chat {ws}/unknown-arch", "'acme_net', which transformers does not know"),
    _c(CODE, "quantize {ws}/unknown-arch --type AWQ --out {ws}/out/awq", "'acme_net'"),
    _c(CODE, "estimate {ws}/unknown-arch", "'acme_net'"),
    # invalid text
    _c(TEXT, "compare {ws}/q.gguf {ws}/q.gguf --prompt \udcff", "--prompt is not valid UTF-8 text"),
    _c(TEXT, "chat {ws}/q.gguf --system \udcff", "--system is not valid UTF-8 text"),
    _c(TEXT, "chat {ws}/q.gguf", "standard input is not UTF-8 text", stdin="hello \udcff\n"),
]


def build_workspace(ws: Path) -> None:
    """The files the cases read: the demo model, a Q8_0 GGUF made from it, an importance matrix, and
    broken copies of each kind of file. Weights are linked, not copied, where a case only reads headers."""
    import torch
    from safetensors.torch import load_file, save_file

    from engine.gguf.convert import convert_to_gguf
    from engine.gguf.quantize import quantize

    demo = ROOT / "resources" / "demo"
    m = ws / "m"
    shutil.copytree(demo, m)
    quantize(m, "Q8_0", ws / "q.gguf")
    (ws / "cal.txt").write_text("calibration " * 200)
    (ws / "cal-long.txt").write_text((demo / "README.md").read_text() * 8)
    quantize(m, "Q4_0", ws / "out-scratch.gguf", calibration=ws / "cal-long.txt", imatrix_chunks=1,
             save_imatrix=ws / "i.gguf")
    (ws / "out-scratch.gguf").unlink()
    (ws / "tiny.txt").write_text("only a few words....")
    (ws / "binary.txt").write_bytes(b"\xff\xfe\x00text" * 600)
    (ws / "garbage.dat").write_bytes(os.urandom(3000))
    (ws / "fake.gguf").write_text("my notes, not a model\n")
    (ws / "dir.gguf").mkdir()
    (ws / "empty").mkdir()
    (ws / "out").mkdir()
    (ws / "notmodel").mkdir()
    (ws / "notmodel" / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    (ws / "loopa.gguf").symlink_to("loopb.gguf")
    (ws / "loopb.gguf").symlink_to("loopa.gguf")
    (ws / "link.gguf").symlink_to("q.gguf")
    (ws / "linkdir").symlink_to("notmodel")
    q = (ws / "q.gguf").read_bytes()
    (ws / "trunc.gguf").write_bytes(q[:4096])
    (ws / "text.gguf").write_text("GGUF? no.")

    def variant(name: str, config: dict | None = None, weights: bytes | None = None, link_weights: bool = True,
                **files) -> Path:
        d = ws / name
        d.mkdir()
        for f in demo.iterdir():
            if f.name != "model.safetensors":
                shutil.copy(f, d / f.name)
        if weights is not None:
            (d / "model.safetensors").write_bytes(weights)
        elif link_weights:
            (d / "model.safetensors").symlink_to(m / "model.safetensors")
        if config is not None:
            (d / "config.json").write_text(json.dumps(config))
        for fname, data in files.items():
            (d / fname.replace("__", ".")).write_bytes(data)
        return d

    st = (m / "model.safetensors").read_bytes()
    cfg = json.loads((m / "config.json").read_text())
    variant("trunc-st", weights=st[: len(st) // 2])
    variant("garbage-st", weights=b"\xff" * 4000)
    variant("badjson")
    (ws / "badjson" / "config.json").write_text('{"model_type": "llama", ')
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}
    variant("shardless", model__safetensors__index__json=json.dumps(index).encode())
    variant("gpt2mix", config={**cfg, "model_type": "gpt2", "architectures": ["LlamaForCausalLM"]})
    variant("unknown-arch", config={**cfg, "model_type": "acme_net", "auto_map": {"AutoModelForCausalLM": "modeling_acme.Acme"}},
            modeling_acme__py=b"raise SystemExit('repository code ran')\n")
    variant("awq-bad", config={**cfg, "quantization_config": {"quant_method": "awq", "bits": 3, "version": "gemm"}})
    variant("badtok", tokenizer__json=b'{"model": {"type": "BPE", "vocab": ')
    variant("mismatch", config={**cfg, "intermediate_size": 2 * cfg["intermediate_size"]})
    tensors = load_file(str(m / "model.safetensors"))
    name = next(k for k in tensors if "layers.0.mlp.up_proj" in k)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[5] = float("nan")
    nan = variant("nan", link_weights=False)
    save_file(tensors, str(nan / "model.safetensors"), metadata={"format": "pt"})
    # a GGUF whose weights hold a NaN (written by the converter, then damaged in place)
    convert_to_gguf(m, ws / "nan.gguf")
    import gguf

    off = next(t.data_offset for t in gguf.GGUFReader(str(ws / "nan.gguf")).tensors if t.name == "blk.0.ffn_up.weight")
    with open(ws / "nan.gguf", "r+b") as f:
        f.seek(off + 10)
        f.write(b"\xc0\x7f")  # a bfloat16 NaN
    del torch


def snapshot(ws: Path) -> dict[str, tuple]:
    """Every entry under ``ws`` (links not followed): kind, size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            folder = p.is_dir() and not p.is_symlink()  # a folder's own time moves with any probe: not compared
            out[str(p.relative_to(ws))] = (st.st_mode >> 12, 0 if folder else st.st_size, 0 if folder else st.st_mtime_ns)
    return out


# Nibble's own note of transformers' model-type names, which any command that checks a model keeps in the data
# folder whatever its outcome (engine.models.resolve): a cache, not a user's file or an output.
_NAMES_CACHE = "transformers-names"


def changes(before: dict, after: dict) -> list[str]:
    return sorted({k for k in before.keys() | after.keys()
                   if before.get(k) != after.get(k) and _NAMES_CACHE not in Path(k).parts})
