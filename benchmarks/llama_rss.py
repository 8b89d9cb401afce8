"""Load a GGUF with llama-cpp-python on CPU, evaluate a short prompt, print RSS and llama.cpp's buffer sizes.

Usage: python3 benchmarks/llama_rss.py MODEL.gguf N_CTX [TYPE_K] [--short]
Prints one JSON object: rss_bytes (after the eval), rss_before_bytes (Python + llama_cpp imported, before
loading), and the sizes llama.cpp logs for the model, KV cache, output and compute buffers (MiB).
Runs alone in its process so RSS means just this model.
"""

import ctypes
import json
import re
import sys

import psutil

import llama_cpp

_log: list[str] = []


@llama_cpp.llama_log_callback
def _cb(level, text, user_data):
    _log.append(text.decode("utf-8", "replace"))


def main() -> None:
    path, n_ctx = sys.argv[1], int(sys.argv[2])
    type_k = sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else "f16"
    fill = "--short" not in sys.argv
    llama_cpp.llama_log_set(_cb, ctypes.c_void_p())
    proc = psutil.Process()
    before = proc.memory_info().rss
    kw = {}
    if type_k != "f16":
        t = getattr(llama_cpp, f"GGML_TYPE_{type_k.upper()}")
        kw = {"type_k": t, "type_v": t, "flash_attn": True}
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_gpu_layers=0, verbose=True, n_threads=2, **kw)
    # Fill the context (the worst case a chat reaches), or with --short just a 64-token prompt.
    n_prompt = n_ctx - 8 if fill else 64
    text_in = b"The quick brown fox jumps over the lazy dog. "
    tokens = llm.tokenize(text_in * (n_prompt // 8 + 1))[:n_prompt]
    llm.eval(tokens)
    text = "".join(_log)

    def mib(pattern):
        vals = [float(x) for x in re.findall(pattern, text)]
        return sum(vals) if vals else None

    rollup = {}
    try:
        for line in open("/proc/self/status"):
            if line.startswith(("RssAnon", "RssFile")):
                k, v = line.split(":")
                rollup[k.lower() + "_bytes"] = int(v.split()[0]) * 1024
    except OSError:
        pass
    print(json.dumps({
        **rollup,
        "n_ctx": n_ctx,
        "prompt_tokens": len(tokens),
        "rss_bytes": proc.memory_info().rss,
        "rss_before_bytes": before,
        "model_mib": mib(r"CPU_Mapped model buffer size =\s*([\d.]+) MiB") or mib(r"CPU model buffer size =\s*([\d.]+) MiB"),
        "repack_mib": mib(r"CPU_REPACK model buffer size =\s*([\d.]+) MiB"),
        "kv_mib": mib(r"KV buffer size =\s*([\d.]+) MiB"),
        "rs_mib": mib(r"RS buffer size =\s*([\d.]+) MiB"),
        "output_mib": mib(r"CPU\s+output buffer size =\s*([\d.]+) MiB"),
        "compute_mib": mib(r"CPU compute buffer size =\s*([\d.]+) MiB"),
    }))


if __name__ == "__main__":
    main()
