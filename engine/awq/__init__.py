"""AWQ: activation-aware 4-bit weight quantization in plain torch (CPU, CUDA, Apple Metal)."""

from engine.awq.config import awq_family_names
from engine.awq.loader import AwqLinear, load_awq
from engine.awq.quantize import (
    AwqResult,
    apply_awq_to_weights,
    quantize_awq,
)

__all__ = ["AwqLinear", "AwqResult", "awq_family_names", "apply_awq_to_weights", "load_awq", "quantize_awq"]
