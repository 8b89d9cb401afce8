"""The model the Eval benchmarks run on: a random-weight Llama (about 50M parameters) built offline,
converted to an F32 GGUF and quantized, so no download is needed."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from eval_models import build_tiny_llama, convert, quantize_gguf  # noqa: E402

LLAMA_BIN = pathlib.Path("/tmp/llamacpp-build/bin")


SHAPES = {
    # about 51M parameters: quick; per-token Python time shows at its largest here
    "small": dict(hidden=768, layers=8, heads=12, kv_heads=4, intermediate=2048),
    # about 300M parameters: per-token times closer to those of real models
    "large": dict(hidden=1536, layers=12, heads=12, kv_heads=4, intermediate=4096),
}


def bench_models(work: pathlib.Path, qtypes=("Q8_0", "Q4_K_M"), size: str = "small") -> dict[str, pathlib.Path]:
    work = work / size if size != "small" else work
    work.mkdir(parents=True, exist_ok=True)
    hf = work / "hf"
    if not (hf / "model.safetensors").exists() and not (hf / "model.safetensors.index.json").exists():
        build_tiny_llama(hf, seed=0, **SHAPES[size])
    out = {"hf": hf, "F32": work / "bench-f32.gguf"}
    if not out["F32"].exists():
        convert(hf, out["F32"])
    for q in qtypes:
        out[q] = work / f"bench-{q.lower()}.gguf"
        if not out[q].exists():
            quantize_gguf(out["F32"], q, out[q])
    return out
