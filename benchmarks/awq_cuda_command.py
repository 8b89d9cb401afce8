"""The whole `nibble quantize MODEL --type AWQ --device cuda` command on a Llama-3.2-1B-shaped model, as the
user waits: process start to exit, with the GPU's memory in use sampled by nvidia-smi while it runs.

    python3 benchmarks/awq_cuda_command.py --tokenizer DIR --calibration TEXT [--repeat 2] [--json OUT]

The model (hidden 2048, 16 layers, 32/8 heads, FFN 8192, vocabulary 128256, tied embeddings, random bf16
weights) is written once under --work with the tokenizer of DIR (any tokenizer whose ids fit the
vocabulary: the calibration tokens are what it makes of TEXT). Each run is a fresh process at the default
128 x 512 calibration; the first also reads the model from disk cold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import run_measured, write_random_llama  # noqa: E402

SHAPE = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": 1, "eos_token_id": 2,
         "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
         "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "head_dim": 64}


class GpuMemory:
    """The most memory nvidia-smi reports in use on GPU 0 while it runs, less what was in use at the start."""

    def __init__(self):
        self.base = self._read_once()
        self.peak = self.base
        self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                       "-i", "0", "-lms", "50"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    @staticmethod
    def _read_once() -> int:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    def _follow(self):
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak, int(line))

    def stop(self) -> int:
        """Peak MiB in use above the start."""
        self._proc.terminate()
        self._thread.join(timeout=5)
        return self.peak - self.base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, type=Path)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/nibble-awq-cuda"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    model = args.work / "llama-1b-shape"
    if not (model / "config.json").is_file():
        t0 = time.perf_counter()
        write_random_llama(model, dict(SHAPE, torch_dtype="bfloat16"))
        for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
            if (args.tokenizer / f).is_file():
                shutil.copy(args.tokenizer / f, model / f)
        print(f"wrote {model} in {time.perf_counter() - t0:.1f} s", flush=True)
    runs = []
    for i in range(args.repeat):
        out = args.work / f"awq-{i}"
        shutil.rmtree(out, ignore_errors=True)
        gpu = GpuMemory()
        r = run_measured([sys.executable, "-m", "engine", "quantize", str(model), "--type", "AWQ", "--device", "cuda",
                          "--calibration", args.calibration, "--samples", str(args.samples), "--seqlen",
                          str(args.seqlen), "--out", str(out), "--json-progress"], cwd=ROOT)
        used = gpu.stop()
        done = next(json.loads(line) for line in r["output"].splitlines()[::-1] if '"event": "done"' in line)
        runs.append({"wall_s": round(r["wall_s"], 2), "quantize_s": done["seconds"],
                     "host_peak_rss_gib": round(r["peak_rss_bytes"] / 2**30, 2),
                     "vram_peak_nvidia_smi_gib": round(used / 1024, 2),
                     "vram_peak_torch_allocator_gib": round((done.get("peak_memory_bytes") or 0) / 2**30, 2),
                     "output_gb": round(done["file_bytes"] / 1e9, 3)})
        print(json.dumps(runs[-1]), flush=True)
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "shape": SHAPE,
              "samples": args.samples, "seqlen": args.seqlen, "runs": runs}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
