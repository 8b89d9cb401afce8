"""Helpers shared by Nibble's benchmarks: measuring a command's wall time and peak memory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
VENDOR = Path(os.environ.get("LLAMA_CPP_VENDOR", "/tmp/setup/llama_cpp_python-0.3.36/vendor/llama.cpp"))


def run_measured(cmd: list[str], **kw) -> dict:
    """Run ``cmd``; return wall seconds and the peak of the summed RSS of it and its children."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        try:
            p = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{out.decode(errors='replace')[-2000:]}")
    return {"wall_s": wall, "peak_rss_bytes": peak, "output": out.decode(errors="replace")}


def llama_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The tensors of a Llama-architecture checkpoint of ``config``'s shape."""
    h, f, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    nh, nkv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim", h // nh)
    V = config["vocab_size"]
    shapes = {"model.embed_tokens.weight": (V, h), "model.norm.weight": (h,)}
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (V, h)
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (nh * hd, h), p + "self_attn.k_proj.weight": (nkv * hd, h),
            p + "self_attn.v_proj.weight": (nkv * hd, h), p + "self_attn.o_proj.weight": (h, nh * hd),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f),
        })
    return shapes


def write_random_model(folder: Path, config: dict, shapes: dict[str, tuple[int, ...]], seed: int = 0,
                       dtype: str = "BF16") -> Path:
    """A random-weight checkpoint of ``shapes`` with ``config``, written tensor by tensor (never whole in memory):
    1-D tensors (norms) near 1, matrices scaled by 1/sqrt(fan-in)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    header, off = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(folder / "model.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(hb)))
        out.write(hb)
        for name, shape in shapes.items():
            if len(shape) == 1:
                w = 1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)
            else:
                w = rng.standard_normal(shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(shape[-1]))
            out.write((np.asarray(w, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def write_random_llama(folder: Path, config: dict, seed: int = 0, dtype: str = "BF16") -> Path:
    """A random-weight Llama-architecture model of ``config``'s shape, written tensor by tensor."""
    return write_random_model(folder, config, llama_shapes(config), seed, dtype)
