"""Run Nibble's model commands on a CUDA machine and report what each did.

Every step runs in its own process with Python's fault handler on, so a crash names the line it
happened on and the steps after it still run. Needs llama-cpp-python built with CUDA and a CUDA
build of torch on the path; Nibble runs from this checkout.

    python3 benchmarks/cuda_check.py --out /tmp/cuda-check [--json results.json]

Prints one line per step (exit status, seconds, the key figure) and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RAW_LOAD = """
import sys, llama_cpp
print("gpu offload:", llama_cpp.llama_supports_gpu_offload())
llm = llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=int(sys.argv[2]), n_ctx=256,
                      verbose=sys.argv[3] == "1", flash_attn=True)
out = llm("user\\nWhat is 2 plus 3?\\n", max_tokens=8, temperature=0)
print("text:", repr(out["choices"][0]["text"]))
"""

TORCH_THEN_LLAMA = """
import sys, torch
x = torch.ones(1024, device="cuda") * 2
print("torch cuda:", torch.version.cuda, float(x.sum()))
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=99, n_ctx=256, verbose=False, flash_attn=True)
out = llm("user\\nWhat is 2 plus 3?\\n", max_tokens=8, temperature=0)
print("text:", repr(out["choices"][0]["text"]))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="scratch folder for the quantized files")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only tries the script itself")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nib = [sys.executable, "-m", "engine"]
    q8, q4, awq = out / "demo-q8_0.gguf", out / "demo-q4_k_m.gguf", out / "demo-awq"
    steps = [
        ("version", nib + ["--version"]),
        ("quantize Q8_0", nib + ["quantize", "demo", "--type", "Q8_0", "--out", str(q8)]),
        ("quantize Q4_K_M", nib + ["quantize", "demo", "--type", "Q4_K_M", "--out", str(q4)]),
        ("quantize IQ4_XS (importance matrix)", nib + ["quantize", "demo", "--type", "IQ4_XS", "--out",
                                                       str(out / "demo-iq4_xs.gguf")]),
        ("llama_cpp alone, 0 GPU layers", [sys.executable, "-c", RAW_LOAD, str(q4), "0", "0"]),
        ("llama_cpp alone, all GPU layers", [sys.executable, "-c", RAW_LOAD, str(q4), "99", "0"]),
        ("llama_cpp alone, all GPU layers, verbose", [sys.executable, "-c", RAW_LOAD, str(q4), "99", "1"]),
        ("torch CUDA, then llama_cpp CUDA", [sys.executable, "-c", TORCH_THEN_LLAMA, str(q4)]),
        ("bench GGUF, cpu", nib + ["bench", str(q4), "-r", "2", "--json"]),
        ("bench GGUF, --gpu-layers 0", nib + ["bench", str(q4), "-r", "2", "--device", "cuda", "--gpu-layers", "0",
                                              "--json"]),
        ("bench GGUF, cuda", nib + ["bench", str(q4), "-r", "3", "--device", "cuda", "--json"]),
        ("bench original, cuda", nib + ["bench", "demo", "-r", "3", "--device", "cuda", "--json"]),
        ("eval GGUF vs GGUF, cuda", nib + ["eval", str(q8), str(q4), "--device", "cuda", "--task", "none",
                                           "--json"]),
        ("eval original vs GGUF, cuda", nib + ["eval", "demo", str(q4), "--device", "cuda", "--json"]),
        ("compare original vs GGUF, cuda", nib + ["compare", "demo", str(q4), "--device", "cuda", "--chat", "--prompt",
                                                  "What is 17 plus 25?", "--json"]),
        ("chat GGUF, cuda", nib + ["chat", str(q4), "--device", "cuda", "--temperature", "0",
                                   "--max-tokens", "24"]),
        ("AWQ quantize, cuda", nib + ["quantize", "demo", "--type", "AWQ", "--device", "cuda", "--out", str(awq)]),
        ("eval original vs AWQ, cuda", nib + ["eval", "demo", str(awq), "--device", "cuda", "--json"]),
        ("bench AWQ, cuda", nib + ["bench", str(awq), "-r", "3", "--device", "cuda", "--json"]),
        ("stats original vs GGUF", nib + ["stats", "demo", str(q4), "--json"]),
        ("quantize Q4_K_M --awq, cuda", nib + ["quantize", "demo", "--type", "Q4_K_M", "--awq", "--device", "cuda",
                                               "--out", str(out / "demo-awq-q4_k_m.gguf")]),
        ("selftest", nib + ["selftest"]),
    ]
    steps = [(n.replace("cuda", args.device), [a if a != "cuda" else args.device for a in c]) for n, c in steps
             if args.device == "cuda" or "CUDA" not in n and "GPU layers" not in n]
    results = []
    for name, cmd in steps:
        t0 = time.perf_counter()
        stdin = "What is 2 plus 3?\n" if name.startswith("chat") else None
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True,
                               timeout=args.timeout)
            rc, so, se = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as exc:
            rc, so, se = "timeout", exc.stdout or "", exc.stderr or ""
            so, se = (so.decode() if isinstance(so, bytes) else so), (se.decode() if isinstance(se, bytes) else se)
        secs = time.perf_counter() - t0
        results.append({"step": name, "rc": rc, "seconds": round(secs, 1), "stdout": so[-3000:],
                        "stderr": se[-3000:], "summary": summarise(name, so)})
        print(f"== {name}: rc={rc} {secs:.1f}s {results[-1]['summary']}", flush=True)
        if rc != 0:
            print(se[-2500:], flush=True)
    print("\n| step | exit | seconds | result |\n| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['step']} | {r['rc']} | {r['seconds']} | {r['summary']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["rc"] == 0 for r in results) else 1


def summarise(name: str, stdout: str) -> str:
    """The figure a user would look at in a step's output."""
    try:
        j = json.loads(stdout[stdout.index("{"):])
    except ValueError:
        lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
        return (lines[-1] if lines else "")[:160].replace("|", "/")
    if name.startswith("bench"):
        vram = j.get("vram_bytes")
        return (f"{j.get('device')}: pp {j.get('pp_tokens_per_s', 0):.0f} t/s, tg {j.get('tg_tokens_per_s', 0):.0f} t/s"
                + (f", VRAM {vram / 2**20:.0f} MiB" if vram else ""))
    if name.startswith("eval"):
        return (f"KLD mean {j['kld']['mean']:.5f}, top-1 {j['top1_agreement']:.3f}, "
                f"ppl {j['reference']['ppl']:.3f} / {j['candidate']['ppl']:.3f}")
    if name.startswith("compare"):
        return f"first divergence {j.get('first_divergence')}, KLD {j.get('kld_mean', j.get('kld'))}"
    if name.startswith("stats"):
        return f"{len(j.get('tensors', []))} tensors"
    return json.dumps(j)[:160]


if __name__ == "__main__":
    raise SystemExit(main())
