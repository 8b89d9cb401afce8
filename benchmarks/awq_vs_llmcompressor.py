"""The whole `nibble quantize --type AWQ` command against llm-compressor's oneshot AWQ, side by side.

Each run is a whole process timed from its start to its exit (interpreter start, imports, model and
tokenizer load, tokenizing, statistics, searches, packing, writing): Nibble as

    python3 -m engine quantize MODEL --type AWQ --bits 4 --group-size 128 --calibration TEXT
        --samples S --seqlen T --device cpu --out DIR

and llm-compressor (W4A16_ASYM, group 128, sequential pipeline) through
benchmarks/awq_llmcompressor_worker.py in its own venv (--llmc). Runs alternate (N, L, N, L, N) so a
slow spell on a shared machine hits both; the table gives medians and every run. Each run records wall
time, the peak of the summed RSS of its process tree (psutil sampling), its user+sys CPU time and the
1-minute load average when it started.

Same calibration tokens: the script cuts the blocks with engine.awq.calibration.calibration_blocks on
the model's tokenizer (engine.awq.calibration.calibration_tokenizer) and hands them to the worker as ids.pt;
Nibble's command tokenizes the same text with those same two functions (engine/awq/quantize.py), which
the script checks before it starts. Quality (mean KL divergence from the original, its 99th percentile,
same top-1, perplexity; llama-perplexity style windows on --eval) is measured once per tool, on the
last run's output, with round-to-nearest for reference.

    python3 benchmarks/awq_vs_llmcompressor.py MODEL --calibration TEXT --eval TEXT
        [--samples 128 --seqlen 512 --repeat 3 --llmc-repeat 2 --llmc /tmp/llmc/bin/python]
        [--json OUT] [--skip-llmc] [--profile]

Both tools use torch's default thread count; set OMP_NUM_THREADS before the command to pin both.
--profile runs Nibble once more under cProfile (not counted in the timings) and prints where the
command's time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine.awq.quantize as nibble_awq  # noqa: E402
from benchmarks.awq_bench import eval_windows, logprobs, quality, rtn_model  # noqa: E402
from benchmarks.common import run_measured  # noqa: E402
from engine.awq import load_awq  # noqa: E402
from engine.awq.calibration import calibration_blocks, calibration_tokenizer, load_tokenizer  # noqa: E402

WORKER = Path(__file__).with_name("awq_llmcompressor_worker.py")
NIBBLE, LLMC = "Nibble", "llm-compressor"
MIB = 1 << 20


def nibble_cmd(args, out: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "quantize", str(args.model), "--type", "AWQ", "--bits", "4",
            "--group-size", "128", "--calibration", str(args.calibration), "--samples", str(args.samples),
            "--seqlen", str(args.seqlen), "--device", "cpu", "--out", str(out)]


def llmc_cmd(args, ids: Path, out: Path) -> list[str]:
    return [args.llmc, str(WORKER), str(args.model), str(ids), str(out)]


def measure(tool: str, cmd: list[str], env: dict, cwd: Path) -> dict:
    """One whole process: wall, peak tree RSS, user+sys CPU of it and its children, load at its start."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run_measured(cmd, env=env, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"tool": tool, "wall_s": r["wall_s"], "peak_rss_bytes": r["peak_rss_bytes"],
           "cpu_user_s": after.ru_utime - before.ru_utime, "cpu_sys_s": after.ru_stime - before.ru_stime,
           "loadavg_start": load, "output_tail": r["output"][-1500:]}
    print(f"  {tool}: {row['wall_s']:.1f} s wall, {row['cpu_user_s'] + row['cpu_sys_s']:.1f} s CPU, "
          f"peak RSS {row['peak_rss_bytes'] / MIB:.0f} MiB, load {load:.2f} at start", flush=True)
    return row


def schedule(n: int, l: int) -> list[str]:
    """N, L, N, L, N, ...: the two tools alternate while both have runs left."""
    order = []
    for i in range(max(n, l)):
        order += [NIBBLE] * (i < n) + [LLMC] * (i < l)
    return order


def summary(runs: list[dict]) -> dict:
    def med(key):
        return statistics.median(r[key] for r in runs)

    return {"runs": len(runs), "wall_s_median": med("wall_s"), "peak_rss_bytes_median": med("peak_rss_bytes"),
            "cpu_s_median": statistics.median(r["cpu_user_s"] + r["cpu_sys_s"] for r in runs),
            "wall_s_all": [r["wall_s"] for r in runs], "peak_rss_bytes_all": [r["peak_rss_bytes"] for r in runs],
            "loadavg_start_all": [r["loadavg_start"] for r in runs], "output_bytes": runs[-1]["output_bytes"]}


def warm_page_cache(model: Path) -> None:
    """Read the model's files once so the first timed run does not alone pay for a cold disk."""
    for f in model.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(64 * MIB):
                    pass


def check_same_tokens() -> None:
    """Nibble's command must cut its calibration blocks with the very functions this script uses for the worker."""
    if nibble_awq.calibration_blocks is not calibration_blocks \
            or nibble_awq.calibration_tokenizer is not calibration_tokenizer:
        raise SystemExit("engine/awq/quantize.py no longer tokenizes calibration text with "
                         "engine.awq.calibration.calibration_blocks/calibration_tokenizer; update this benchmark so both "
                         "tools still get the same tokens")


# ----------------------------------------------------------------------------- quality

def measure_quality(args, outputs: dict[str, Path]) -> dict:
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(args.model)
    windows = eval_windows(tok, Path(args.eval).read_text(encoding="utf-8"), args.ctx, args.windows)
    orig = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    ref = logprobs(orig, windows)
    rows = {"original": quality(ref, ref, windows),
            "RTN W4 g128": quality(ref, logprobs(rtn_model(args.model, 128), windows), windows)}
    if NIBBLE in outputs:
        rows["Nibble AWQ"] = quality(ref, logprobs(load_awq(outputs[NIBBLE], "cpu"), windows), windows)
    if LLMC in outputs:
        m = AutoModelForCausalLM.from_pretrained(outputs[LLMC], dtype=torch.float32).eval()
        rows["llm-compressor AWQ"] = quality(ref, logprobs(m, windows), windows)
    return {"windows": int(windows.shape[0]), "ctx": args.ctx, "params": sum(p.numel() for p in orig.parameters()),
            "layers": orig.config.num_hidden_layers, "rows": rows}


# ----------------------------------------------------------------------------- profile

# What each stage of the command is, as the function that does it (file suffix, name). Entries nest
# (the per-layer entry holds statistics, searches and forward passes; imports happen inside others), so
# the stages do not add up to the total. A function renamed in engine/awq shows as "-".
STAGES = [
    ("imports (all, wherever they happen)", ("importlib._bootstrap>", "_find_and_load")),
    ("model skeleton (config, meta-device model)", ("engine/awq/quantize.py", "_build_model_skeleton")),
    ("tokenizer load", ("engine/models/calibration.py", "calibration_tokenizer")),
    ("tokenizing calibration text", ("engine/awq/calibration.py", "calibration_blocks")),
    ("calibration embedding", ("engine/awq/quantize.py", "calibration_inputs")),
    ("loading each layer's weights", ("engine/awq/quantize.py", "_materialise")),
    ("per-layer quantization, all of it", ("engine/awq/layer.py", "run")),
    ("  statistics (inputs of the linears)", ("engine/awq/layer.py", "_inputs_of")),
    ("  block scale search", ("engine/awq/search.py", "search_scale_block")),
    ("  linear scale search", ("engine/awq/search.py", "search_scale_linear")),
    ("  clip search", ("engine/awq/search.py", "search_clip")),
    ("forward passes (torch modules, also inside searches)", ("torch/nn/modules/module.py", "_call_impl")),
    ("packing + writing each layer", ("engine/awq/quantize.py", "_write_layer")),
    ("  of which packing", ("engine/awq/pack.py", "pack_gemm")),
    ("writing the rest, closing shards", ("engine/awq/io.py", "finish")),
]


def profile_stages(path: Path, top: int = 20) -> dict:
    """Cumulative seconds of each stage's function and the top engine/awq entries, from a cProfile dump."""
    st = pstats.Stats(str(path))
    entries = {(f.replace(os.sep, "/"), name): ct for (f, _line, name), (_cc, _nc, _tt, ct, _c) in st.stats.items()}

    def cum(suffix: str, name: str) -> float | None:
        hits = [ct for (f, n), ct in entries.items() if n == name and suffix in f]
        return max(hits) if hits else None

    stages = [(label, cum(*where)) for label, where in STAGES]
    awq = sorted(((ct, f"{f.split('engine/')[-1]}:{n}") for (f, n), ct in entries.items()
                  if "engine/awq/" in f or f.endswith("engine/models/calibration.py")), reverse=True)[:top]
    return {"total_s": st.total_tt, "stages": stages, "top_engine_awq": [(name, ct) for ct, name in awq]}


def run_profile(args, work: Path, env: dict) -> dict:
    prof, out = work / "nibble.prof", work / "nibble-profile"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof)] + nibble_cmd(args, out)[1:]
    print("profiling: " + shlex.join(cmd), flush=True)
    wall = run_measured(cmd, env=env, cwd=ROOT)["wall_s"]
    shutil.rmtree(out, ignore_errors=True)
    return dict(profile_stages(prof), wall_s=wall)


# ----------------------------------------------------------------------------- report

def report(args, argv: list[str], info: dict, runs: list[dict], q: dict, prof: dict | None) -> str:
    llmc = "" if args.skip_llmc else f"; llm-compressor {info['llmc_version']}"
    about = (f"{args.model.name}: {q['params'] / 1e6:.1f}M parameters, {q['layers']} layers; calibration "
             f"{args.samples} x {args.seqlen} tokens{'' if args.skip_llmc else ' (the same ids for both)'}; "
             f"CPU {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads){llmc}. "
             f"Quality on {q['windows']} windows of {q['ctx']} tokens of {args.eval.name}.")
    head = ("| whole command | runs | wall median (s) | wall, each run (s) | peak RSS median (MiB) "
            "| CPU user+sys median (s) | load avg at each start | output (MiB) |")
    lines = ["```", "python3 benchmarks/awq_vs_llmcompressor.py " + shlex.join(argv), "```", "", about, "",
             head, "|---|---|---|---|---|---|---|---|"]
    sums = {}
    for tool, label in ((NIBBLE, "Nibble `quantize --type AWQ`"), (LLMC, "llm-compressor `oneshot` AWQModifier")):
        rs = [r for r in runs if r["tool"] == tool]
        if not rs:
            continue
        s = sums[tool] = summary(rs)
        lines.append(f"| {label} | {s['runs']} | {s['wall_s_median']:.1f} | "
                     f"{', '.join(f'{w:.1f}' for w in s['wall_s_all'])} | {s['peak_rss_bytes_median'] / MIB:.0f} | "
                     f"{s['cpu_s_median']:.1f} | {', '.join(f'{x:.2f}' for x in s['loadavg_start_all'])} | "
                     f"{s['output_bytes'] / MIB:.1f} |")
    if len(sums) == 2:
        n, l = sums[NIBBLE], sums[LLMC]
        ratios = (f"llm-compressor / Nibble, ratio of medians: wall **{l['wall_s_median'] / n['wall_s_median']:.1f}x**, "
                  f"peak RSS **{l['peak_rss_bytes_median'] / n['peak_rss_bytes_median']:.2f}x**, CPU time "
                  f"{l['cpu_s_median'] / n['cpu_s_median']:.1f}x. (llm-compressor's output is a full-precision "
                  "folder of fake-quantized weights for measuring, Nibble's a packed AWQ checkpoint.)")
        lines += ["", ratios]
    lines += ["", "| model | mean KLD | KLD p99 | same top-1 | PPL |", "|---|---|---|---|---|"]
    for name, r in q["rows"].items():
        lines.append(f"| {name} | {r['kld_mean']:.5f} | {r['kld_p99']:.4f} | {r['top1_same']:.3f} | {r['ppl']:.3f} |")
    if prof:
        total = prof["total_s"]
        where = (f"Where Nibble's command spends its time (cProfile, {prof['wall_s']:.1f} s wall under the "
                 f"profiler, {total:.1f} s profiled; cumulative seconds, entries nest):")
        lines += ["", where, "", "| stage | seconds | share |", "|---|---|---|"]
        for label, ct in prof["stages"]:
            cell = ("-", "-") if ct is None else (f"{ct:.2f}", f"{100 * ct / total:.0f}%")
            lines.append(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {cell[0]} | {cell[1]} |")
        lines += ["", "| top engine/awq entries (cumulative) | seconds |", "|---|---|"]
        lines += [f"| `{name}` | {ct:.2f} |" for name, ct in prof["top_engine_awq"]]
    return "\n".join(lines)


def llmc_version(python: str) -> str:
    try:
        return subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('llmcompressor'))"],
                              check=False, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=""),
                              timeout=60).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--calibration", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="Nibble runs (3)")
    ap.add_argument("--llmc-repeat", type=int, default=2, help="llm-compressor runs (2)")
    ap.add_argument("--llmc", default="/tmp/llmc/bin/python", help="python of a venv with llmcompressor installed")
    ap.add_argument("--skip-llmc", action="store_true", help="run Nibble only")
    ap.add_argument("--ctx", type=int, default=256, help="tokens per evaluation window (256)")
    ap.add_argument("--windows", type=int, default=64, help="at most this many evaluation windows (64)")
    ap.add_argument("--profile", action="store_true", help="also run Nibble once under cProfile, untimed")
    ap.add_argument("--work", type=Path, default=None, help="folder for outputs (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    for name in ("model", "calibration", "eval"):
        setattr(args, name, getattr(args, name).expanduser().resolve())
    if args.repeat < 1 or (not args.skip_llmc and args.llmc_repeat < 1):
        ap.error("--repeat and --llmc-repeat must be at least 1")
    if not args.skip_llmc and not Path(args.llmc).exists():
        ap.error(f"{args.llmc} not found; give --llmc the python of a venv with llmcompressor, or --skip-llmc")
    check_same_tokens()

    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="awq-vs-llmc-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ids = calibration_blocks(calibration_tokenizer(args.model), args.calibration, args.samples, args.seqlen,
                                 model_dir=args.model)
        torch.save(ids, work / "ids.pt")
        warm_page_cache(args.model)
        nibble_env = dict(os.environ, PYTHONPATH=str(ROOT))
        llmc_env = dict(os.environ, PYTHONPATH="")
        order = schedule(args.repeat, 0 if args.skip_llmc else args.llmc_repeat)
        runs, outputs = [], {}
        for i, tool in enumerate(order):
            out = work / f"{tool}-{i}"
            print(f"run {i + 1}/{len(order)}", flush=True)
            if tool == NIBBLE:
                row = measure(tool, nibble_cmd(args, out), nibble_env, ROOT)
            else:
                row = measure(tool, llmc_cmd(args, work / "ids.pt", out), llmc_env, work)
                row["worker"] = json.loads((out / "timing.json").read_text())
            row["output_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            runs.append(row)
            if tool in outputs:
                shutil.rmtree(outputs[tool], ignore_errors=True)
            outputs[tool] = out
        print("quality of each tool's last output", flush=True)
        q = measure_quality(args, outputs)
        prof = run_profile(args, work, nibble_env) if args.profile else None
        info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "llmc_version": "-" if args.skip_llmc else llmc_version(args.llmc)}
        text = report(args, argv, info, runs, q, prof)
        print("\n" + text)
        if args.json:
            sums = {t: summary([r for r in runs if r["tool"] == t]) for t in (NIBBLE, LLMC) if t in outputs}
            args.json.write_text(json.dumps({
                "command": [sys.executable, __file__, *argv], "info": info, "runs": runs, "summary": sums,
                "quality": q, "profile": prof, "markdown": text,
                "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
