"""Nibble's MODEL -> Q4_K_M against llama.cpp's own two steps (convert_hf_to_gguf.py, then llama-quantize).

Model: Llama-3.2-1B's shape with random bf16 weights and the real Llama-3 tokenizer (rebuilt by
transformers from llama.cpp's vocab-only GGUF). Both pipelines run here, one after the other, with the
same thread count; wall time and peak resident memory (summed over child processes) are recorded, and
the two output files are compared tensor by tensor.

    python3 benchmarks/gguf_vs_llamacpp.py --llama-quantize /tmp/llamacpp-build/bin/llama-quantize
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, VENDOR, run_measured, write_random_llama  # noqa: E402

LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-quantize", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--repeat", type=int, default=3, help="alternate the two pipelines this many times; medians")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="nibble-bench-"))
    model = work / "model"
    if not (model / "model.safetensors").exists():
        from transformers import AutoTokenizer

        write_random_llama(model, LLAMA_32_1B)
        tok = AutoTokenizer.from_pretrained(VENDOR / "models", gguf_file="ggml-vocab-llama-bpe.gguf")
        tok.save_pretrained(model)
        tj_path = model / "tokenizer.json"  # keep exactly the 128256 tokens the embedding has
        tj = json.loads(tj_path.read_text())
        tj["added_tokens"] = [t for t in tj["added_tokens"] if t["id"] < LLAMA_32_1B["vocab_size"]]
        tj_path.write_text(json.dumps(tj))
        tc_path = model / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["added_tokens_decoder"] = {k: v for k, v in tc.get("added_tokens_decoder", {}).items()
                                      if int(k) < LLAMA_32_1B["vocab_size"]}
        tc.pop("pad_token", None)
        tc_path.write_text(json.dumps(tc))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ref_env = dict(os.environ, PYTHONPATH=str(VENDOR / "gguf-py"))
    runs = {"nibble": [], "convert": [], "quantize": []}
    for _ in range(args.repeat):  # alternate, so both see the same machine conditions
        for f in ("nibble.gguf", "ref.gguf"):
            (work / f).unlink(missing_ok=True)
        runs["nibble"].append(run_measured(
            [sys.executable, "-m", "engine", "quantize", str(model), "--type", args.type,
             "--out", str(work / "nibble.gguf"), "--threads", str(args.threads)], env=env, cwd=ROOT))
        runs["convert"].append(run_measured(
            [sys.executable, str(VENDOR / "convert_hf_to_gguf.py"), str(model), "--outtype", "bf16",
             "--outfile", str(work / "ref-bf16.gguf")], env=ref_env))
        runs["quantize"].append(run_measured(
            [args.llama_quantize, str(work / "ref-bf16.gguf"), str(work / "ref.gguf"), args.type, str(args.threads)]))
        (work / "ref-bf16.gguf").unlink()

    def med(key, field):
        vals = sorted(r[field] for r in runs[key])
        return vals[len(vals) // 2]

    ref_walls = sorted(c["wall_s"] + q["wall_s"] for c, q in zip(runs["convert"], runs["quantize"]))
    ours = {"wall_s": med("nibble", "wall_s"), "peak_rss_bytes": med("nibble", "peak_rss_bytes")}
    conv = {"wall_s": med("convert", "wall_s"), "peak_rss_bytes": med("convert", "peak_rss_bytes")}
    quant = {"wall_s": med("quantize", "wall_s"), "peak_rss_bytes": med("quantize", "peak_rss_bytes")}
    import gguf
    import numpy as np

    a, b = gguf.GGUFReader(work / "nibble.gguf"), gguf.GGUFReader(work / "ref.gguf")
    tb = {t.name: t for t in b.tensors}
    same = sum(1 for t in a.tensors if t.name in tb and t.tensor_type == tb[t.name].tensor_type
               and np.array_equal(np.asarray(t.data), np.asarray(tb[t.name].data)))
    ref_wall = ref_walls[len(ref_walls) // 2]
    ref_peak = max(conv["peak_rss_bytes"], quant["peak_rss_bytes"])
    result = {
        "type": args.type, "threads": args.threads, "repeat": args.repeat,
        "nibble_walls_s": [round(r["wall_s"], 1) for r in runs["nibble"]],
        "llama_cpp_walls_s": [round(c["wall_s"] + q["wall_s"], 1) for c, q in zip(runs["convert"], runs["quantize"])],
        "nibble": {"wall_s": round(ours["wall_s"], 1), "peak_rss_mib": round(ours["peak_rss_bytes"] / 2**20)},
        "llama_cpp": {"convert_s": round(conv["wall_s"], 1), "quantize_s": round(quant["wall_s"], 1),
                      "wall_s": round(ref_wall, 1), "peak_rss_mib": round(ref_peak / 2**20),
                      "convert_peak_rss_mib": round(conv["peak_rss_bytes"] / 2**20),
                      "quantize_peak_rss_mib": round(quant["peak_rss_bytes"] / 2**20)},
        "wall_ratio": round(ours["wall_s"] / ref_wall, 3),
        "peak_rss_ratio": round(ours["peak_rss_bytes"] / ref_peak, 3),
        "identical_tensors": f"{same}/{len(a.tensors)} (reference has {len(b.tensors)})",
        "file_bytes": {"nibble": (work / "nibble.gguf").stat().st_size, "llama_cpp": (work / "ref.gguf").stat().st_size},
    }
    print(json.dumps(result, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
