"""AWQ's estimated checkpoint size and calibration memory against what `nibble quantize --type AWQ` uses.

    python3 benchmarks/awq_memory.py [MODEL] [--settings 32x256 64x512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, run_measured  # noqa: E402


def main() -> int:
    from engine.estimate import awq_cost, load_plan

    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="demo")
    ap.add_argument("--settings", nargs="*", default=["32x256", "64x512"])
    ap.add_argument("--group-size", type=int, default=128)
    args = ap.parse_args()
    plan = load_plan(args.model)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print("| samples × seqlen | checkpoint est. | checkpoint real | peak RSS est. | peak RSS measured | error |")
    print("|---|---|---|---|---|---|")
    for s in args.settings:
        n, L = (int(x) for x in s.split("x"))
        work = Path(tempfile.mkdtemp(prefix="nibble-awqmem-"))
        out = work / "awq"
        r = run_measured([sys.executable, "-m", "engine", "quantize", args.model, "--type", "AWQ", "--out", str(out),
                          "--samples", str(n), "--seqlen", str(L), "--group-size", str(args.group_size)],
                         env=env, cwd=ROOT)
        est = awq_cost(plan, args.group_size, n, L)
        real_ckpt = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        err = est.calibration_peak_ram_bytes / r["peak_rss_bytes"] - 1
        print(f"| {n} × {L} | {est.checkpoint_bytes / 2**20:.1f} MiB | {real_ckpt / 2**20:.1f} MiB | "
              f"{est.calibration_peak_ram_bytes / 2**20:.0f} MiB | {r['peak_rss_bytes'] / 2**20:.0f} MiB | {err:+.1%} |",
              flush=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
