"""Peak RSS of llama.cpp's quantizer (through llama-cpp-python) for one GGUF and type, against the estimate.

Usage: python3 benchmarks/quantize_rss.py MODEL.gguf TYPE
"""

import ctypes
import json
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import llama_cpp  # noqa: E402

from engine.estimate import estimate, load_plan  # noqa: E402

path, qtype = sys.argv[1], sys.argv[2]
est = estimate(load_plan(path), qtype)
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
params.nthread = 2
with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as d:
    out = os.path.join(d, "out.gguf")
    assert llama_cpp.llama_model_quantize(path.encode(), out.encode(), ctypes.byref(params)) == 0
    size = os.path.getsize(out)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"type": qtype, "peak_rss_bytes": peak, "estimated_peak_bytes": est.quantize.peak_ram_bytes,
                  "file_bytes": size, "estimated_file_bytes": est.file_bytes}))
