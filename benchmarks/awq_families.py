"""AWQ on every dense family it takes, against round-to-nearest, on the tiny models of tests/test_awq_families.py.

Prints a markdown table: KL divergence from the float32 original over 128 held-out tokens (resources/eval.txt)
for Nibble's AWQ (loaded with Nibble's AWQ loader) and for plain round-to-nearest 4-bit of the same linears,
group size 32, 8 calibration samples of 64 tokens, and the seconds AWQ took (2-core shared CPU: indicative).

    python3 benchmarks/awq_families.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_awq_families import CASES, G, _ids, _kld, _make, round_to_nearest  # noqa: E402


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from engine.awq import load_awq, quantize_awq

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for key in CASES:
            src = _make(Path(d) / key / "src", key)
            res = quantize_awq(src, Path(d) / key / "awq", group_size=G, samples=8, seqlen=64)
            ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
            rtn = round_to_nearest(src)
            ids = _ids(src)
            awq, plain = _kld(ref, load_awq(res.out_dir, "cpu"), ids), _kld(ref, rtn, ids)
            rows.append(f"| {key} | {ref.config.architectures[0]} | {awq:.2e} | {plain:.2e} | {awq / plain:.2f} "
                        f"| {res.seconds:.1f} |")
    print("| model | architecture | KLD AWQ | KLD round-to-nearest | ratio | AWQ seconds |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
