"""The best file for a size against llama.cpp's uniform types with llama-imatrix, at the same file size.

For each type (Q4_K_M, Q3_K_M): llama-imatrix on the calibration text, llama-quantize with it; then
``nibble quantize MODEL --target-size <that file's exact size> --calibration <the same text>``. KL divergence
of each against the unquantized model (F32 GGUF) on held-out text, llama-perplexity's method (windows of
512, second half scored). The search's cost is timed against a plain ``nibble quantize --type Q4_K_M
--calibration`` of the same model, the two run alternately in this one process, each with an empty cache.

    python3 benchmarks/mixed_quality.py demo --bin /tmp/llamacpp-build/bin --dialogues 600
    python3 benchmarks/mixed_quality.py /path/to/model --bin /tmp/llamacpp-build/bin --dialogues 600
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _nibble(args: list[str], home: Path) -> float:
    """Run the nibble CLI with an empty data folder (no cached profile); wall seconds."""
    env = {**os.environ, "NIBBLE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine", *args], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    from engine.analysis.evaluate import evaluate
    from engine.models.demo import heldout_text, render_chat
    from engine.models.demo_questions import training_dialogues
    from engine.models.source import resolve_model_path
    from engine.runtime import open_runtime

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--bin", required=True, help="folder with llama-imatrix and llama-quantize")
    ap.add_argument("--types", nargs="*", default=["Q4_K_M", "Q3_K_M"])
    ap.add_argument("--dialogues", type=int, default=600, help="calibration: training-split dialogues")
    ap.add_argument("--timing-rounds", type=int, default=1)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    model = resolve_model_path(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="nibble-mix-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cal = work / "calibration.txt"
    cal.write_text("".join(render_chat(d) for d in training_dialogues(args.dialogues, seed=12345)))
    bin_ = Path(args.bin)
    f32 = work / "f32.gguf"
    if not f32.exists():
        _nibble(["quantize", str(model), "--type", "F32", "--out", str(f32)], work / "home-f32")
    threads = str(os.cpu_count() or 2)
    t = time.perf_counter()
    imat = work / "llama-imatrix.gguf"
    subprocess.run([str(bin_ / "llama-imatrix"), "-m", str(f32), "-f", str(cal), "-o", str(imat), "-c", "512",
                    "-t", threads, "--no-ppl"], check=True, capture_output=True)
    imatrix_s = time.perf_counter() - t
    text = heldout_text()
    ref = open_runtime(f32, n_ctx=512)

    def kld(path: Path) -> dict:
        cand = open_runtime(path, n_ctx=512)
        r = evaluate(ref, cand, text, ctx=512)
        cand.close()
        return {"bytes": path.stat().st_size, "kld_mean": r.kld_mean, "kld_p99": r.kld_p99,
                "top1": r.top1_agreement, "tokens": r.tokens}

    rows = []
    for qt in args.types:
        uni = work / f"llama-{qt}.gguf"
        subprocess.run([str(bin_ / "llama-quantize"), "--imatrix", str(imat), str(f32), str(uni), qt, threads],
                       check=True, capture_output=True)
        size = uni.stat().st_size
        mix = work / f"nibble-mix-{qt}.gguf"
        home = work / f"home-{qt}"
        shutil.rmtree(home, ignore_errors=True)
        secs = _nibble(["quantize", str(model), "--target-size", str(size), "--calibration", str(cal),
                        "--out", str(mix)], home)
        recipe = json.loads(mix.with_name(mix.stem + ".recipe.json").read_text())
        row = {"type": qt, "llama": kld(uni), "mix": kld(mix), "mix_seconds": secs,
               "predicted_kld": recipe["predicted_kld"]}
        row["ratio"] = row["mix"]["kld_mean"] / row["llama"]["kld_mean"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    timings = []
    for r in range(args.timing_rounds):  # alternate: plain, mix, each from an empty cache
        plain = _nibble(["quantize", str(model), "--type", "Q4_K_M", "--calibration", str(cal),
                         "--out", str(work / "plain.gguf")], work / f"home-plain-{r}")
        size = (work / "plain.gguf").stat().st_size
        mixed = _nibble(["quantize", str(model), "--target-size", str(size), "--calibration", str(cal),
                         "--out", str(work / "timed-mix.gguf")], work / f"home-mix-{r}")
        timings.append({"plain_s": round(plain, 1), "mix_s": round(mixed, 1), "ratio": round(mixed / plain, 2)})
        print(json.dumps(timings[-1]), flush=True)
    print(f"\nmodel {args.model}; calibration {args.dialogues} dialogues; llama-imatrix {imatrix_s:.1f} s")
    print("| size of | llama.cpp + llama-imatrix KLD (p99, top-1) | Nibble mix KLD (p99, top-1) | ratio | predicted |")
    print("|---|---|---|---|---|")
    for r in rows:
        a, b = r["llama"], r["mix"]
        print(f"| {r['type']} ({a['bytes']:,} B; mix {b['bytes']:,} B) | {a['kld_mean']:.5f} ({a['kld_p99']:.4f}, "
              f"{a['top1']:.2%}) | {b['kld_mean']:.5f} ({b['kld_p99']:.4f}, {b['top1']:.2%}) | **{r['ratio']:.2f}x** | "
              f"{r['predicted_kld']:.5f} |")
    for t in timings:
        print(f"time: plain Q4_K_M --calibration {t['plain_s']} s, mix {t['mix_s']} s: {t['ratio']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
