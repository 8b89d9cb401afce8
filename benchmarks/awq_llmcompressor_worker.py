"""Run llm-compressor's AWQModifier (W4A16_ASYM, group 128) on a model with given calibration blocks.

Runs in its own virtual environment (llm-compressor pins its own transformers), e.g.

    python3 -m venv --system-site-packages /tmp/llmc && /tmp/llmc/bin/pip install llmcompressor
    /tmp/llmc/bin/python benchmarks/awq_llmcompressor_worker.py MODEL CALIB_IDS.pt OUT_DIR

Writes OUT_DIR as a plain Hugging Face folder holding the dequantized (fake-quantized) weights, so
the benchmark can measure it with the same code as Nibble's output, and OUT_DIR/timing.json.
"""

import json
import sys
import time

import torch


def main() -> None:
    model_dir, ids_path, out = sys.argv[1:4]
    if not torch.cuda.is_available():
        # llm-compressor pins its activation cache, which fails on CPU-only machines; pinning is a no-op here
        torch.Tensor.pin_memory = lambda self, *a, **k: self
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier

    ids = torch.load(ids_path)
    ds = Dataset.from_list([{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in ids])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    t0 = time.perf_counter()
    oneshot(model=model, tokenizer=tok, dataset=ds, recipe=AWQModifier(ignore=["lm_head"], scheme="W4A16_ASYM",
                                                                           targets=["Linear"]),
            max_seq_length=ids.shape[1], num_calibration_samples=ids.shape[0], shuffle_calibration_samples=False,
            pipeline="sequential")
    seconds = time.perf_counter() - t0
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    n = 0
    with torch.no_grad():
        for name, m in model.named_modules():
            args = getattr(getattr(m, "quantization_scheme", None), "weights", None)
            if isinstance(m, torch.nn.Linear) and args is not None and hasattr(m, "weight_scale"):
                m.weight.data = fake_quantize(m.weight.data, m.weight_scale, m.weight_zero_point, args)
                n += 1
    for name, m in model.named_modules():  # drop quantization hooks/attributes before a plain save
        for attr in ("weight_scale", "weight_zero_point", "weight_g_idx", "quantization_scheme",
                     "quantization_status"):
            if hasattr(m, attr):
                try:
                    delattr(m, attr)
                except AttributeError:
                    pass
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith(("_scale", "_zero_point"))}
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)  # tied to the embeddings: saved once, as from_pretrained expects
    from safetensors.torch import save_file
    import os, shutil

    os.makedirs(out, exist_ok=True)
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    cfg.pop("quantization_config", None)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(model_dir, f), out)
    json.dump({"seconds": seconds, "quantized_linears": n}, open(os.path.join(out, "timing.json"), "w"))
    print(json.dumps({"seconds": seconds, "quantized_linears": n}))


if __name__ == "__main__":
    main()
