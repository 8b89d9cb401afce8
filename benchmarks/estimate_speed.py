"""How long the estimate takes to recompute for a 70B-shaped model (the GUI does it on every change).

Usage: PYTHONPATH=. python3 benchmarks/estimate_speed.py
Builds the plan from benchmarks/data/llama3-70b-config.json and a synthesised safetensors tensor table,
then times estimate() for a new type, a new context, a new KV type and new GPU layers.
"""

import json
import time
from pathlib import Path

from engine.estimate import estimate, estimate_all, prepare, probe_machine
from engine.estimate.plan import plan_from_hf

cfg = json.loads((Path(__file__).parent / "data" / "llama3-70b-config.json").read_text())
L, E, F, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
kv = cfg["num_key_value_heads"] * E // cfg["num_attention_heads"]
t = {"model.embed_tokens.weight": [V, E], "lm_head.weight": [V, E], "model.norm.weight": [E]}
for i in range(L):
    p = f"model.layers.{i}."
    t.update({p + "input_layernorm.weight": [E], p + "post_attention_layernorm.weight": [E],
              p + "self_attn.q_proj.weight": [E, E], p + "self_attn.k_proj.weight": [kv, E],
              p + "self_attn.v_proj.weight": [kv, E], p + "self_attn.o_proj.weight": [E, E],
              p + "mlp.gate_proj.weight": [F, E], p + "mlp.up_proj.weight": [F, E], p + "mlp.down_proj.weight": [E, F]})
t0 = time.perf_counter()
plan = plan_from_hf(cfg, {k: {"dtype": "BF16", "shape": v} for k, v in t.items()}, source="llama3-70b",
                    source_kind="folder", source_bytes=0, metadata_bytes=9_000_000)
prepare(plan)
print(f"plan built and every type's tensor types worked out in {1000 * (time.perf_counter() - t0):.1f} ms, "
      f"{len(plan.tensors)} tensors")
machine = probe_machine(".")


def timed(label, fn, n=20):
    fn()
    best = min(_once(fn) for _ in range(n))
    print(f"{label:<46}{best * 1000:8.3f} ms")


def _once(fn):
    a = time.perf_counter()
    fn()
    return time.perf_counter() - a


timed("new type, ctx 8192 (does not fit: suggestion search)", lambda: estimate(plan, "Q5_K_M", ctx=8192, machine=machine))
timed("new type, no machine given", lambda: estimate(plan, "IQ4_XS", ctx=8192))
timed("same type, new context", lambda: estimate(plan, "Q5_K_M", ctx=16384, machine=machine))
timed("same type, q8_0 KV cache", lambda: estimate(plan, "Q5_K_M", ctx=16384, kv_type="q8_0", machine=machine))
timed("same type, 40 GPU layers", lambda: estimate(plan, "Q5_K_M", ctx=16384, gpu_layers=40, machine=machine))
timed("estimate_all (10 common types, cached)", lambda: estimate_all(plan, ctx=8192, machine=machine))
