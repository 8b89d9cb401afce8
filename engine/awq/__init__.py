"""AWQ: activation-aware 4-bit weight quantization in plain torch (CPU, CUDA, Apple Metal)."""

from engine.awq.config import SUPPORTED_MODEL_TYPES
from engine.awq.loader import AwqLinear, load_awq
from engine.awq.quantize import (
    AwqResult,
    apply_awq_to_weights,
    quantize_awq,
)

__all__ = ["AwqLinear", "AwqResult", "SUPPORTED_MODEL_TYPES", "apply_awq_to_weights", "load_awq", "quantize_awq"]
