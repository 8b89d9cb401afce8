"""What AWQ needs to know before any work: which architectures it serves, whether a group size fits a
model, whether the calibration batch fits the device, and what an AWQ checkpoint's config says."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.core.devices import free_memory
from engine.core.errors import NibbleError
from engine.models import families


def awq_family_names() -> str:
    """The families AWQ quantizes, for messages."""
    return ", ".join(sorted(f.name for f in families.families() if f.awq is not None))


def awq_family(cfg: dict, where: str):
    """The registered family of ``cfg`` with its AWQ description, or a one-line NibbleError."""
    fam = families.find(cfg)
    if fam is not None:
        fam = families.for_config(cfg, where)  # the converter's checks first: they name the field at fault
    if fam is None or fam.awq is None:
        arch = ",".join(cfg.get("architectures") or []) or cfg.get("model_type")
        why = f"; {fam.awq_refusal}" if fam is not None and fam.awq_refusal else ""
        raise NibbleError(f"{where}: architecture {arch!r} (model_type {cfg.get('model_type')!r}) is not supported "
                          f"for AWQ{why}; AWQ supports {awq_family_names()}")
    if fam.vision_note(cfg) is not None:
        raise NibbleError(f"{where}: this {fam.name} checkpoint has a vision or audio part, and AWQ quantizes "
                          "text-only checkpoints; quantize it to GGUF (its language model converts)")
    return fam



def resolve_device(device: str) -> torch.device:
    device = (device or "cpu").lower()
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NibbleError(f"device {device} asked for, but this machine has no usable CUDA GPU; use the CPU",
                              setting="device")
        return torch.device(device)
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NibbleError("device mps asked for, but this machine has no Apple Metal (mps) support; use the CPU",
                              setting="device")
        return torch.device("mps")
    raise NibbleError(f"device {device!r} is not one of cpu, cuda, mps", setting="device")


def read_config(model_dir: Path) -> dict:
    cfg_path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise NibbleError(f"{model_dir}: model folder not found")
    if not cfg_path.is_file():
        raise NibbleError(f"{model_dir}: no config.json; point at a Hugging Face model folder")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise NibbleError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise NibbleError(f"{cfg_path}: not a JSON object; download it again")
    if cfg.get("quantization_config"):
        raise NibbleError(f"{cfg_path}: the model is already quantized "
                          f"({cfg['quantization_config'].get('quant_method', '?')}); start from the original weights")
    awq_family(cfg, str(cfg_path))
    return cfg


def check_group_size(config, bits: int, group_size: int) -> None:
    if bits != 4:
        raise NibbleError(f"{bits} bits: AWQ in the GEMM layout stores 4-bit weights only; use 4", setting="bits")
    if group_size < 8 or group_size % 8:
        raise NibbleError(f"group size {group_size} must be a positive multiple of 8 (128 is usual)",
                          setting="group size")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    widths = {"hidden size (q/k/v/gate/up inputs)": config.hidden_size,
              "attention width (o_proj input)": config.num_attention_heads * head_dim,
              "intermediate size (down_proj input)": config.intermediate_size}
    for what, w in widths.items():
        if w % group_size:
            divisors = [g for g in (32, 64, 128) if all(v % g == 0 for v in widths.values())]
            hint = f"use {max(divisors)}" if divisors else "choose a group size dividing it"
            raise NibbleError(f"group size {group_size} does not divide the {what} {w}; {hint}", setting="group size")
    out_widths = [config.num_key_value_heads * head_dim, config.hidden_size, config.intermediate_size,
                  config.num_attention_heads * head_dim]
    if any(w % 8 for w in out_widths):
        raise NibbleError("a linear's output width is not a multiple of 8; the AWQ GEMM layout cannot store it")


def check_memory(config, dev: torch.device, samples: int, seqlen: int, search_samples: int, chunk: int) -> None:
    """Refuse up front when the calibration activations cannot fit, and say how to shrink them."""
    d, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    attn = config.num_attention_heads * head_dim
    tokens = samples * seqlen
    layer_params = 2 * d * attn + 2 * d * config.num_key_value_heads * head_dim + 3 * d * inter
    need = 4 * (2 * tokens * d + tokens * attn       # layer inputs and outputs, o_proj's inputs
                # (down_proj's inputs are kept too only where they fit: engine.awq.layer)
                + 4 * search_samples * seqlen * d    # search inputs and reference outputs
                + 3 * layer_params                   # layer, kept fp copies, scratch
                + 8 * d * inter                      # four search candidates' gate and up weights
                + d * d + attn * attn + inter * inter  # Gram matrices
                + chunk * seqlen * (4 * inter + 4 * d)   # one chunk's forward
                + chunk * config.num_attention_heads * seqlen * seqlen)
    avail = free_memory(str(dev))
    if avail is not None and need > 0.9 * avail:
        gib = 1 << 30
        raise NibbleError(
            f"the calibration batch needs about {need / gib:.1f} GiB on {dev.type} but {avail / gib:.1f} GiB is free; "
            f"use fewer calibration samples (now {samples}), a shorter sample length (now {seqlen}) or another device",
            setting="calibration samples")


def read_awq_quant_config(model_dir: Path, raw: dict | None) -> dict:
    """The ``quantization_config`` of an AWQ folder Nibble can run, or a NibbleError saying why not."""
    if raw is None:
        raise NibbleError(f"{model_dir}: no config.json; point at an AWQ model folder")
    qc = raw.get("quantization_config") or {}
    if qc.get("quant_method") != "awq":
        raise NibbleError(f"{model_dir}: not an AWQ checkpoint (quantization_config.quant_method is "
                          f"{qc.get('quant_method')!r})")
    if int(qc.get("bits", qc.get("w_bit", 4))) != 4 or str(qc.get("version", "gemm")).lower() != "gemm":
        raise NibbleError(f"{model_dir}: only 4-bit AWQ in the GEMM layout is supported "
                          f"(found bits={qc.get('bits')}, version={qc.get('version')})")
    if not qc.get("zero_point", True):
        raise NibbleError(f"{model_dir}: AWQ without zero points is not supported")
    if "group_size" not in qc and "q_group_size" in qc:
        qc = dict(qc, group_size=qc["q_group_size"])
    awq_family({k: v for k, v in raw.items() if k != "quantization_config"}, f"{model_dir}/config.json")
    return qc


def low_precision(dev: torch.device) -> torch.dtype | None:
    """The precision calibration's forward passes and statistics run in on ``dev``: bfloat16 where the
    hardware multiplies it natively (CUDA GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX), else None
    (float32). Searches, folding and the weights written stay in float32."""
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if dev.type == "cpu":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if native else None
    return None

