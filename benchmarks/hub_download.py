"""Download throughput: Nibble's resumable downloader against huggingface_hub's hf_hub_download.

Both fetch the same safetensors file from the stand-in Hub (tests/hubserver.py) on 127.0.0.1 into fresh
Hugging Face caches, so the figure is the client's own overhead (hashing, writing, progress), not the
network's. Run from the repository root:

    PYTHONPATH=. python3 benchmarks/hub_download.py [--mb 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    from safetensors.numpy import save

    from tests.hubserver import StandInHub, llama_config

    n = args.mb * 1024 * 1024 // 2
    data = save({"w": np.random.default_rng(0).standard_normal(n).astype(np.float16)})
    server = StandInHub()
    server.add_model("bench/model", {"config.json": llama_config(), "model.safetensors": data})
    os.environ.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    os.environ.pop("HF_HUB_OFFLINE", None)
    import huggingface_hub.constants as c

    c.ENDPOINT, c.HF_HUB_OFFLINE = server.url, False
    c.HUGGINGFACE_CO_URL_TEMPLATE = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    from huggingface_hub import hf_hub_download

    from engine import hub

    times: dict[str, list[float]] = {"nibble download_model": [], "huggingface_hub hf_hub_download": []}
    for _ in range(args.repeat):
        for name in times:
            with tempfile.TemporaryDirectory() as tmp:
                c.HF_HUB_CACHE = tmp
                start = time.perf_counter()
                if name.startswith("nibble"):
                    hub.download_model("bench/model")
                else:
                    hf_hub_download("bench/model", "model.safetensors", cache_dir=tmp)
                times[name].append(time.perf_counter() - start)
    server.close()
    size_mb = len(data) / 1e6
    print(f"{size_mb:.0f} MB file, {args.repeat} runs each, median:")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:34s} {med:6.2f} s  {size_mb / med:7.0f} MB/s")


if __name__ == "__main__":
    main()
