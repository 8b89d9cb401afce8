"""Running AWQ checkpoints anywhere torch runs: a pure-torch dequantizing linear.

``load_awq`` builds the transformers model from its config (no repository code), swaps each
quantized ``nn.Linear`` for :class:`AwqLinear` and loads the packed tensors. By default each layer
dequantizes its weight once, on first use, and keeps it (fast generation, fp16-sized memory);
``keep_packed=True`` keeps only the 4-bit tensors and dequantizes on every call.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from engine.awq.config import read_awq_quant_config, resolve_device
from engine.awq.io import WeightReader, init_unsaved_buffers
from engine.awq.pack import dequantize_gemm
from engine.core.errors import NibbleError


class AwqLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored in the AutoAWQ GEMM layout."""

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool,
                 dtype: torch.dtype = torch.float16, keep_packed: bool = False, device=None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.compute_dtype, self.keep_packed = dtype, keep_packed
        self.register_buffer("qweight", torch.empty(in_features, out_features // 8, dtype=torch.int32, device=device))
        self.register_buffer("qzeros", torch.empty(in_features // group_size, out_features // 8, dtype=torch.int32,
                                                   device=device))
        self.register_buffer("scales", torch.empty(in_features // group_size, out_features, dtype=torch.float16,
                                                   device=device))
        if bias:
            self.register_buffer("bias", torch.empty(out_features, dtype=torch.float16, device=device))
        else:
            self.bias = None
        self._dense: torch.Tensor | None = None

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_gemm(self.qweight, self.qzeros, self.scales, self.group_size, torch.float32).to(
            self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._dense
        if w is None:
            w = self.dequantized_weight()
            if not self.keep_packed:
                self._dense = w
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return nn.functional.linear(x, w.to(x.dtype), b)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group_size={self.group_size}, bits=4"


def _replace_linears(module: nn.Module, quantized: set[str], group_size: int, dtype, keep_packed, prefix=""):
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, nn.Linear) and full in quantized:
            setattr(module, name, AwqLinear(child.in_features, child.out_features, group_size,
                                            child.bias is not None, dtype, keep_packed, device="meta"))
        else:
            _replace_linears(child, quantized, group_size, dtype, keep_packed, full + ".")


def load_awq(model_dir, device: str = "cpu", *, dtype: torch.dtype | None = None, keep_packed: bool = False):
    """Load an AWQ (GEMM, 4-bit) folder as a transformers causal LM on ``device`` (cpu, cuda, mps).

    ``dtype`` is the compute dtype: float32 on CPU, float16 on GPUs unless given.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    dev = resolve_device(device)
    raw = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else None
    qc = read_awq_quant_config(model_dir, raw)
    group_size = int(qc["group_size"])
    if dtype is None:
        dtype = torch.float32 if dev.type == "cpu" else torch.float16
    cfg_dict = {k: v for k, v in raw.items() if k != "quantization_config"}
    config = AutoConfig.for_model(**cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, dtype=dtype)
    reader = WeightReader(model_dir)
    names = reader.names()
    quantized = {n[: -len(".qweight")] for n in names if n.endswith(".qweight")}
    _replace_linears(model, quantized, group_size, dtype, keep_packed)
    state = {}
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in reader:
            continue
        t = reader.get(name)
        if t.is_floating_point() and not name.endswith(".scales"):
            t = t.to(dtype)
        state[name] = t.to(dev)
    missing = [n for n in expected if n not in state and not n.endswith("rotary_emb.inv_freq")
               and not n.endswith("original_inv_freq")]
    tied = getattr(config, "tie_word_embeddings", False)
    if tied:
        missing = [n for n in missing if n != "lm_head.weight"]
    if missing:
        raise NibbleError(f"{model_dir}: AWQ checkpoint lacks {len(missing)} tensors (first: {missing[0]}); "
                          "the folder is incomplete")
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.tie_weights()
    # non-persistent buffers (rotary frequencies) are rebuilt on the real device
    for parent in model.modules():
        for cname, child in list(parent.named_children()):
            if "RotaryEmbedding" in type(child).__name__:
                setattr(parent, cname, type(child)(config=config).to(dev))
    init_unsaved_buffers(model)  # the rest, e.g. Gemma's embedding scale
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise NibbleError(f"{model_dir}: could not place tensor {leftovers[0]} from the checkpoint")
    model.eval()
    return model
