"""Nibble's MODEL -> Q4_K_M against llama.cpp's own two steps (convert_hf_to_gguf.py, then llama-quantize).

Model (``--shape``): Llama-3.2-1B's shape (default), OLMo-2-0425-1B's (a dense family with q/k norms and
norms after each block) or a 1.2B Qwen3-MoE (32 experts of 512, 4 active, 16 layers), with random bf16
weights and a real tokenizer rebuilt by transformers from llama.cpp's vocab-only GGUF (Llama-3's; Qwen2's
for the MoE). Both pipelines run here, alternating, with the same thread count; wall time and peak
resident memory (summed over child processes) are recorded, and the two output files are compared tensor
by tensor.

    python3 benchmarks/gguf_vs_llamacpp.py --llama-quantize /tmp/llamacpp-build/bin/llama-quantize
    python3 benchmarks/gguf_vs_llamacpp.py --llama-quantize ... --shape olmo2-1b
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
from benchmarks.common import ROOT, VENDOR, llama_shapes, run_measured, write_random_model  # noqa: E402

LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
}
OLMO2_1B = {  # OLMo-2-0425-1B, with Llama-3's vocabulary in place of its own (not among llama.cpp's test vocabularies)
    "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 128256,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128001,
}
QWEN3MOE_1B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 1024,
    "intermediate_size": 3072, "moe_intermediate_size": 512, "num_experts": 32, "num_experts_per_tok": 4,
    "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "num_hidden_layers": 16,
    "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
    "use_sliding_window": False, "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151645,
}


def olmo2_shapes(cfg: dict) -> dict:
    shapes = {}
    for name, shape in llama_shapes(cfg).items():
        if name.endswith("input_layernorm.weight"):  # OLMo 2 normalises after attention and MLP instead
            name = name.replace("input_layernorm", "post_feedforward_layernorm")
        shapes[name] = shape
        if name.endswith("self_attn.o_proj.weight"):
            p = name[: -len("o_proj.weight")]
            hd = cfg["hidden_size"] // cfg["num_attention_heads"]
            shapes[p + "q_norm.weight"] = (cfg["num_attention_heads"] * hd,)
            shapes[p + "k_norm.weight"] = (cfg["num_key_value_heads"] * hd,)
    return shapes


def qwen3moe_shapes(cfg: dict) -> dict:
    shapes = {}
    h, f, n = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts"]
    for name, shape in llama_shapes(cfg).items():
        if ".mlp." in name:
            continue
        shapes[name] = shape
        if name.endswith("self_attn.o_proj.weight"):
            p = name[: -len("self_attn.o_proj.weight")]
            shapes[p + "self_attn.q_norm.weight"] = (cfg["head_dim"],)
            shapes[p + "self_attn.k_norm.weight"] = (cfg["head_dim"],)
            shapes[p + "mlp.gate.weight"] = (n, h)
            for e in range(n):
                x = f"{p}mlp.experts.{e}."
                shapes.update({x + "gate_proj.weight": (f, h), x + "up_proj.weight": (f, h),
                               x + "down_proj.weight": (h, f)})
    return shapes


# --shape -> (config, tensor shapes, llama.cpp test vocabulary)
SHAPES = {"llama-3.2-1b": (LLAMA_32_1B, llama_shapes, "ggml-vocab-llama-bpe.gguf"),
          "olmo2-1b": (OLMO2_1B, olmo2_shapes, "ggml-vocab-llama-bpe.gguf"),
          "qwen3moe-1b": (QWEN3MOE_1B, qwen3moe_shapes, "ggml-vocab-qwen2.gguf")}


def make_model(model: Path, shape: str) -> None:
    """A random-weight checkpoint of ``shape`` with its real tokenizer, the tokens trimmed to the embedding."""
    from transformers import AutoTokenizer

    cfg, shapes, vocab = SHAPES[shape]
    write_random_model(model, cfg, shapes(cfg))
    tok = AutoTokenizer.from_pretrained(VENDOR / "models", gguf_file=vocab)
    tok.save_pretrained(model)
    tj_path = model / "tokenizer.json"  # keep exactly the tokens the embedding has
    tj = json.loads(tj_path.read_text())
    tj["added_tokens"] = [t for t in tj["added_tokens"] if t["id"] < cfg["vocab_size"]]
    tj_path.write_text(json.dumps(tj))
    tc_path = model / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["added_tokens_decoder"] = {k: v for k, v in tc.get("added_tokens_decoder", {}).items()
                                  if int(k) < cfg["vocab_size"]}
    tc.pop("pad_token", None)
    tc_path.write_text(json.dumps(tc))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-quantize", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--repeat", type=int, default=3, help="alternate the two pipelines this many times; medians")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-1b")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="nibble-bench-"))
    model = work / "model"
    if not (model / "model.safetensors").exists():
        make_model(model, args.shape)
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
        "shape": args.shape, "type": args.type, "threads": args.threads, "repeat": args.repeat,
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
