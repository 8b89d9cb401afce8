"""Run llama.cpp's convert_hf_to_gguf.py on a model folder, as the reference Nibble's converter must match.

Usage: python3 tests/reference_convert.py CONVERT_SCRIPT MODEL_DIR OUT.gguf PRE [CONVERTER OPTIONS...]
llama.cpp names a BPE pre-tokenizer by hashing how a known vocabulary tokenizes a probe text; the tiny
trained vocabularies of the tests have no entry there, so PRE (the pre-tokenizer their pattern is, e.g.
"llama-bpe") stands in for that lookup. Everything else is llama.cpp's converter unchanged.
"""

import runpy
import sys
from pathlib import Path

script, model, out, pre = sys.argv[1:5]
root = Path(script).parent
sys.path[:0] = [str(root), str(root / "gguf-py")]

from conversion import base  # noqa: E402

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = [script, model, "--outfile", out, "--outtype", "f32", *sys.argv[5:]]
runpy.run_path(script, run_name="__main__")
