"""AWQ: activation-aware 4-bit weight quantization in plain torch (CPU, CUDA, Apple Metal)."""

from engine.awq.model import AwqLinear, load_awq
from engine.awq.quantize import (
    SUPPORTED_MODEL_TYPES,
    AwqResult,
    apply_awq_to_weights,
    quantize_awq,
)

__all__ = ["AwqLinear", "AwqResult", "SUPPORTED_MODEL_TYPES", "apply_awq_to_weights", "load_awq", "quantize_awq"]
