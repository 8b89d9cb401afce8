"""Every QSettings key the app keeps, with its default and type, in one place.

Views read and write them through :class:`app.state.AppState` (``state.get(CHAT_TEMPERATURE)``), never by a
key string of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    type: type | None = str  # None: stored as Qt gives it (window geometry)


# the window
WINDOW_VIEW = Setting("window/view", "Quantize")
WINDOW_GEOMETRY = Setting("window/geometry", None, None)
APPEARANCE = Setting("window/appearance", "system")  # app.style.APPEARANCES: "system", "light" or "dark"
# the models the user has worked with (JSON list of app.state.ModelEntry)
RECENT_MODELS = Setting("models/recent", "[]")
# Quantize
QUANTIZE_TYPE = Setting("quantize/type", "Q4_K_M")
QUANTIZE_FORMAT = Setting("quantize/format", "gguf")
QUANTIZE_CTX = Setting("quantize/ctx", 4096, int)
QUANTIZE_KV = Setting("quantize/kv", "f16")
QUANTIZE_OUTPUT_DIR = Setting("quantize/output_dir", "")  # "": Nibble's outputs folder (services.outputs_dir)
QUANTIZE_IMATRIX_WINDOWS = Setting("quantize/imatrix_windows", 64, int)  # 0: the whole calibration text
# the rate (FLOP/s) the last importance matrix ran at on this machine; 0: none measured yet
QUANTIZE_IMATRIX_RATE = Setting("quantize/imatrix_rate", 0.0, float)
QUANTIZE_AWQ_SAMPLES = Setting("quantize/awq_samples", 128, int)
QUANTIZE_AWQ_SEQLEN = Setting("quantize/awq_seqlen", 512, int)
QUANTIZE_AWQ_GROUP = Setting("quantize/awq_group_size", 128, int)
# Chat
CHAT_SYSTEM = Setting("chat/system", "You are a helpful assistant.")
CHAT_TEMPERATURE = Setting("chat/temperature", 0.7, float)
CHAT_TOP_P = Setting("chat/top_p", 0.95, float)
CHAT_MAX_TOKENS = Setting("chat/max_tokens", 256, int)
CHAT_GPU_LAYERS = Setting("chat/gpu_layers", -1, int)  # -1: automatic (services.AUTO_GPU_LAYERS)
CHAT_CONTEXT = Setting("chat/context", 4096, int)
# Compare
COMPARE_PROMPT = Setting("compare/prompt", "Write two sentences about why the sky is blue.")
COMPARE_MAX_TOKENS = Setting("compare/max_tokens", 64, int)


def splitter_setting(view: str, index: int) -> Setting:
    """Where the sizes of a view's ``index``-th splitter are kept (the window saves and restores them)."""
    return Setting(f"splitters/{view}/{index}", None, None)
