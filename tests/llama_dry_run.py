"""Run llama.cpp's quantizer in dry-run mode and print, as JSON, the type it picks for every tensor.

Usage: python3 tests/llama_dry_run.py MODEL.gguf FTYPE_NAME [FTYPE_NAME ...]
Prints {"Q4_K_M": {"types": {tensor: type}, "quant_mib": float}, ...}. Runs in its own process because
llama.cpp's log callback is process-wide.
"""

import ctypes
import json
import re
import sys

import llama_cpp

_buf: list[str] = []


@llama_cpp.llama_log_callback
def _log(level, text, user_data):
    _buf.append(text.decode("utf-8", "replace"))


def dry_run(path: str, ftype_name: str) -> dict:
    _buf.clear()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}", None) or getattr(
        llama_cpp, f"LLAMA_FTYPE_ALL_{ftype_name}")
    params.dry_run = True
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(path.encode(), b"/dev/null", ctypes.byref(params))
    text = "".join(_buf)
    if rc != 0:
        raise SystemExit(f"dry run failed for {ftype_name}:\n{text[-2000:]}")
    types = {}
    for m in re.finditer(r"\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\w+), (?:.*?)size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((\w+)\))?",
                         text):
        name, src, new = m.group(1), m.group(2), m.group(3)
        types[name] = (new or src).upper()
    quant = re.search(r"quant size\s*=\s*([\d.]+) MiB", text)
    return {"types": types, "quant_mib": float(quant.group(1)) if quant else None}


if __name__ == "__main__":
    llama_cpp.llama_log_set(_log, ctypes.c_void_p())
    print(json.dumps({ft: dry_run(sys.argv[1], ft) for ft in sys.argv[2:]}))
