"""Does Nibble's importance matrix help the way llama-imatrix's does?

On the demo model: each type quantized without an importance matrix, with Nibble's (``--calibration``), and
with one made by llama.cpp's own ``llama-imatrix`` on the same calibration text; KL divergence of each
against the unquantized model (F32 GGUF) on the demo's held-out dialogues, llama-perplexity's method.

    python3 benchmarks/imatrix_quality.py --llama-imatrix /tmp/llamacpp-build/bin/llama-imatrix
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TYPES = ["Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_XXS"]


def main() -> int:
    from engine.models.demo import heldout_text, render_chat
    from engine.models.demo_questions import training_dialogues
    from engine.analysis.evaluate import evaluate
    from engine.gguf.quantize import find_type, quantize
    from engine.runtime import open_runtime

    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-imatrix", default=None)
    ap.add_argument("--types", nargs="*", default=TYPES)
    ap.add_argument("--dialogues", type=int, default=3000, help="calibration dialogues (training distribution)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nibble-imatrix-"))
    cal = work / "calibration.txt"
    cal.write_text("".join(render_chat(d) for d in training_dialogues(args.dialogues, seed=12345)))
    f32 = quantize("demo", "F32", work / "demo-f32.gguf").output
    ours = work / "nibble-imatrix.gguf"
    quantize("demo", "Q8_0", work / "scratch.gguf", calibration=cal, save_imatrix=ours)
    theirs = None
    if args.llama_imatrix:
        theirs = work / "llama-imatrix.gguf"
        subprocess.run([args.llama_imatrix, "-m", str(f32), "-f", str(cal), "-o", str(theirs), "-c", "512",
                        "-t", "2", "--no-ppl"], check=True, capture_output=True)
    text = heldout_text()
    ref = open_runtime(f32, n_ctx=512)
    rows = []
    for t in args.types:
        row = {"type": t}
        variants = {"none": {}, "nibble": {"imatrix": ours}}
        if theirs:
            variants["llama-imatrix"] = {"imatrix": theirs}
        for name, kw in variants.items():
            if name == "none" and find_type(t).needs_imatrix:
                continue
            out = quantize(f32, t, work / f"{t}-{name}.gguf", **kw).output
            cand = open_runtime(out, n_ctx=512)
            r = evaluate(ref, cand, text, ctx=512)
            cand.close()
            row[name] = {"kld_mean": round(r.kld_mean, 5), "top1": round(r.top1_agreement, 4),
                         "bytes": out.stat().st_size}
            out.unlink()
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| type | no imatrix KLD | Nibble imatrix KLD | llama-imatrix KLD |\n|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k]['kld_mean']:.5f}" if k in row else "needs one" for k in ("none", "nibble", "llama-imatrix")]
        print(f"| {row['type']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
