"""Every registered family: Nibble's converter against llama.cpp's, on the tiny wide-weight test models.

Prints a markdown table: tensors identical to llama.cpp's converter output, metadata identical, KL divergence
and top-token agreement of llama.cpp's logits from the two files, Nibble's F32 logits against transformers
(largest difference relative to the largest logit), and whether AWQ takes the family.

    python3 benchmarks/families_vs_llamacpp.py [KEY ...]    (some families only, e.g. qwen35 qwen35moe)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from familymodels import REFERENCE_ARGS, SPECS, logits_reference, make_family_model  # noqa: E402
from llama_source import reference_converter  # noqa: E402
from test_families import TEXT, _fields, _ids, _log_softmax, _logits  # noqa: E402


def _awq(cfg: dict) -> str:
    from engine.awq.config import awq_family
    from engine.core.errors import NibbleError

    try:
        awq_family(cfg, "config.json")
        return "yes"
    except NibbleError:
        return "refuses"


def main() -> int:
    import json

    from engine.gguf.convert import convert_to_gguf

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for key in sys.argv[1:] or SPECS:
            base = Path(d) / key
            folder = make_family_model(base / "model", key)
            ref = base / "ref.gguf"
            subprocess.run([sys.executable, str(ROOT / "tests" / "reference_convert.py"), str(reference_converter()),
                            str(folder), str(ref), SPECS[key][2] or "default", *REFERENCE_ARGS.get(key, [])],
                           check=True, capture_output=True)
            ours = convert_to_gguf(folder, base / "nibble.gguf")
            (kv_a, t_a), (kv_b, t_b) = _fields(ours), _fields(ref)
            same_t = sum(1 for n, t in t_a.items() if n in t_b and np.array_equal(np.asarray(t.data),
                                                                                  np.asarray(t_b[n].data)))
            same_kv = kv_a.keys() == kv_b.keys() and all(kv_a[k] == kv_b[k] for k in kv_a)
            cfg = json.loads((folder / "config.json").read_text())
            bos = cfg.get("bos_token_id", (cfg.get("text_config") or {}).get("bos_token_id"))
            ids = ([bos] if bos is not None else []) + _ids(folder, TEXT)
            a, b = _logits(ours, ids), _logits(ref, ids)
            pa, pb = _log_softmax(a), _log_softmax(b)
            kld = float((np.exp(pb) * (pb - pa)).sum(-1).mean())
            hf = logits_reference(folder, ids)
            rows.append(f"| {key} | {cfg['architectures'][0]} | {same_t}/{len(t_b)} | {'yes' if same_kv else 'NO'} "
                        f"| {kld:.1e} | {100 * (a.argmax(-1) == b.argmax(-1)).mean():.0f} % "
                        f"| {np.abs(a - hf).max() / np.abs(hf).max():.1e} | {_awq(cfg)} |")
    print("| model | architecture | tensors identical | metadata identical | KLD (llama.cpp, both files) "
          "| same top | F32 vs transformers | AWQ |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
