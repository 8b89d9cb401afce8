"""AWQ quantization of a Hugging Face causal LM, one decoder layer at a time.

The model's family (engine/models/families) says which linears share an input, where scales fold and
how the layer's residual stream is composed; :mod:`engine.awq.layer` quantizes each layer from that,
with the calibration hidden states the already-quantized layers before it produce.

Only one layer's weights are materialised at a time; the rest of the model stays on the meta
device. The output is written under a temporary name next to the target and renamed at the end.
"""

from __future__ import annotations

import inspect
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.awq import native, search
from engine.awq.calibration import calibration_blocks, calibration_tokenizer
from engine.awq.config import (
    awq_family,
    check_group_size,
    check_memory,
    low_precision,
    read_config,
    resolve_device,
)
from engine.awq.io import ShardWriter, WeightReader, copy_side_files, init_unsaved_buffers
from engine.awq.layer import LayerQuantizer, attention_mask
from engine.awq.pack import pack_gemm
from engine.core.errors import NibbleError, check_at_least
from engine.core.outputs import check_free_space, check_new_folder, check_output, temp_path, write_error
from engine.core.progress import Reporter
from engine.models.families.tensors import shape_mismatch_error



@dataclass
class AwqResult:
    """What a quantization run produced."""

    out_dir: Path
    seconds: float
    layers: int
    bits: int
    group_size: int
    samples: int
    seqlen: int
    device: str
    peak_memory_bytes: int | None = None
    files: list[str] = field(default_factory=list)

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.out_dir.iterdir() if p.is_file())

    def to_json(self) -> dict:
        return {"output": str(self.out_dir), "type": f"AWQ W{self.bits} g{self.group_size}",
                "file_bytes": self.file_bytes, "seconds": round(self.seconds, 3), "layers": self.layers,
                "samples": self.samples, "seqlen": self.seqlen, "device": self.device,
                "peak_memory_bytes": self.peak_memory_bytes}


# ----------------------------------------------------------------------------- helpers

def _build_model_skeleton(model_dir: Path, raw_cfg: dict, family):
    """(config, meta-device model): Nibble's own plain Llama-style layers where they describe the model
    (:mod:`engine.awq.native`, no import of transformers' modelling code), else transformers' model."""
    built = native.build(raw_cfg, family)
    if built is not None:
        return built
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, attn_implementation="sdpa")
        except ValueError:  # a model whose attention torch's sdpa cannot run (Gemma 2's logit softcapping)
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, attn_implementation="eager")
    return model.config, model


def _read(module: nn.Module, prefix: str, reader: WeightReader) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors for the meta-device ``module``, as stored."""
    return {name: reader.get(prefix + name) for name in module.state_dict()}


def _materialise(model, module: nn.Module, prefix: str, reader: WeightReader, dev: torch.device,
                 tensors: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """``module`` of the meta-device ``model`` on ``dev`` in float32, its weights read from the checkpoint
    (or given, as :func:`_read` returns them).

    The tensors are put in place directly: ``Module.to_empty`` on meta tensors runs torch's reference kernels,
    whose first use imports torch's symbolic-shape machinery (2 s on a GPU machine)."""
    tensors = tensors if tensors is not None else _read(module, prefix, reader)
    for name, want in module.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        m = module.get_submodule(owner)
        if tensors[name].shape != want.shape:
            raise shape_mismatch_error(reader.where(prefix + name), prefix + name, tensors[name].shape, want.shape)
        t = tensors[name].to(dev)  # moved as stored, widened there: half the bytes cross to a GPU
        t = t.float() if t.is_floating_point() else t
        if leaf in m._parameters:
            m._parameters[leaf] = nn.Parameter(t, requires_grad=False)
        else:
            m._buffers[leaf] = t
    init_unsaved_buffers(model, module)
    return module


def _release(module: nn.Module) -> None:
    """Give back a materialised module's memory: its tensors become meta-device placeholders again."""
    for m in module.modules():
        for n, p in m._parameters.items():
            if p is not None:
                m._parameters[n] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"),
                                                requires_grad=False)
        for n, b in m._buffers.items():
            if b is not None:
                m._buffers[n] = torch.empty(b.shape, dtype=b.dtype, device="meta")


def _multiplier(cfg: dict, key: str) -> float:
    return float(cfg.get(key) or 1.0) if key else 1.0


def calibration_inputs(family, raw_cfg: dict, model, reader: WeightReader, ids: torch.Tensor, dev: torch.device):
    """What the layers of the meta-device ``model`` are run with: the first layer's inputs for ``ids`` [N, L]
    (embeddings, times the family's embedding multiplier), each layer's attention inputs (position
    embeddings and mask, :func:`_attention_inputs`) and the family's residual multiplier."""
    cfg, spec = family.config(raw_cfg), family.awq
    table = model.model.embed_tokens
    if type(table).forward is nn.Embedding.forward and table.max_norm is None:
        # a plain lookup (not a scaled embedding): only the rows the ids use become float32
        x = reader.get("model.embed_tokens.weight")[ids].float()
    else:
        embed = _materialise(model, table, "model.embed_tokens.", reader, torch.device("cpu"))
        x = embed(ids)
        _release(embed)
    x = (x * _multiplier(cfg, spec.embedding_multiplier)).to(dev)
    return x, _attention_inputs(family, raw_cfg, model, ids.shape[1], dev), _multiplier(cfg, spec.residual_multiplier)


def _attention_inputs(family, raw_cfg: dict, model, seqlen: int, dev: torch.device) -> list[tuple]:
    """For each layer, the position embeddings and the mask its attention takes: rope per layer type
    where the model has one per type (Gemma 3's local layers), the family's sliding windows."""
    config = model.config
    rotary = type(model.model.rotary_emb)(config=config).to(dev)
    pos_ids = torch.arange(seqlen, device=dev)[None]
    probe = torch.zeros(1, seqlen, config.hidden_size, device=dev)
    types = getattr(config, "layer_types", None)
    by_type = bool(types) and "layer_type" in inspect.signature(rotary.forward).parameters
    cfg = family.config(raw_cfg)
    hp = family.hparams(cfg)
    windowed = family.swa_layers(cfg, hp)
    eager = config._attn_implementation == "eager"  # eager attention applies no causal mask of its own
    pos_cache, mask_cache, out = {}, {}, []
    for i in range(config.num_hidden_layers):
        key = types[i] if by_type else None
        if key not in pos_cache:
            cos, sin = rotary(probe, pos_ids, key) if by_type else rotary(probe, pos_ids)
            pos_cache[key] = (cos.float(), sin.float())
        window = hp.sliding_window if windowed and windowed[i] and hp.sliding_window < seqlen else None
        if window not in mask_cache:
            mask_cache[window] = attention_mask(seqlen, window, dev) if (window or eager) else None
        out.append((pos_cache[key], mask_cache[window]))
    return out


# ----------------------------------------------------------------------------- the job

def _run(model_dir, out_dir, *, mode, bits, group_size, calibration, samples, seqlen, device, reporter,
         search_samples, overwrite, clip) -> AwqResult:
    t0 = time.perf_counter()
    reporter = reporter or Reporter()
    from engine.models.source import resolve_model_path

    model_dir, out_dir = resolve_model_path(model_dir), Path(out_dir).expanduser()
    raw_cfg = read_config(model_dir)
    family = awq_family(raw_cfg, str(model_dir / "config.json"))
    spec = family.awq
    check_at_least(samples, 1, "calibration samples", setting="calibration samples")
    check_at_least(seqlen, 2, "sample length", setting="sample length")
    longest = raw_cfg.get("max_position_embeddings")
    if isinstance(longest, int) and seqlen > longest:
        raise NibbleError(f"sample length {seqlen} is longer than the model's context ({longest} tokens); "
                          f"use {min(512, longest)} tokens or less", setting="sample length")
    dev = resolve_device(device)
    if overwrite:
        check_output(out_dir, inputs=[model_dir], folder_output=True)
    else:
        check_new_folder(out_dir, inputs=[model_dir])
    check_free_space(out_dir.parent, output_bytes(model_dir, raw_cfg, mode))
    config, model = _build_model_skeleton(model_dir, raw_cfg, family)
    check_group_size(config, bits, group_size)
    search_samples = min(samples, search_samples or samples)
    chunk = max(1, 8192 // seqlen)
    check_memory(config, dev, samples, seqlen, search_samples, chunk)
    reader = WeightReader(model_dir)
    tokenizer = calibration_tokenizer(model_dir)
    ids = calibration_blocks(tokenizer, calibration, samples, seqlen, model_dir=model_dir)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    tmp = temp_path(out_dir, "partial")
    prefetch = ThreadPoolExecutor(1, thread_name_prefix="nibble-awq-read")
    try:
        tmp.mkdir()
        writer = ShardWriter(tmp)
        n_layers = config.num_hidden_layers
        reporter.progress(0, n_layers, "embedding calibration tokens")
        with torch.inference_mode():
            x, attention, residual = calibration_inputs(family, raw_cfg, model, reader, ids, dev)
            out = torch.empty_like(x)
            gen = torch.Generator().manual_seed(0)
            search_idx = torch.randperm(samples, generator=gen)[:search_samples].sort().values.to(dev)
            low = low_precision(dev)
            layers = model.model.layers
            reading = prefetch.submit(_read, layers[0], "model.layers.0.", reader)
            for i in range(n_layers):
                reporter.check_cancel()
                prefix = f"model.layers.{i}."
                tensors = reading.result()
                if i + 1 < n_layers:  # the next layer's weights are read while this one is quantized
                    reading = prefetch.submit(_read, layers[i + 1], f"model.layers.{i + 1}.", reader)
                src_dtype = tensors[spec.linears[0] + ".weight"].dtype
                layer = _materialise(model, layers[i], prefix, reader, dev, tensors)
                del tensors
                pos, mask = attention[i]
                lq = LayerQuantizer(layer, spec, pos=pos, mask=mask, norm_offset=family.norm_offset, residual=residual,
                                    group_size=group_size, bits=bits, chunk=chunk, reporter=reporter, clip=clip,
                                    low=low)
                lq.run(x, out, search_idx)
                _write_layer(writer, layer, lq, prefix, mode, group_size, bits, src_dtype)
                _release(layer)
                x, out = out, x
                reporter.progress(i + 1, n_layers, f"layer {i + 1}/{n_layers} quantized")
            del x, out
            reporter.check_cancel()
            for name in reader.names():
                if not name.startswith("model.layers."):
                    t = reader.get(name)
                    writer.add(name, t.to(torch.float16) if mode == "awq" and t.is_floating_point() else t)
        writer.finish()
        new_cfg = dict(raw_cfg)
        new_cfg.pop("auto_map", None)  # the repository's code is neither run nor copied (engine.models.resolve)
        if mode == "awq":
            new_cfg["quantization_config"] = {"quant_method": "awq", "bits": bits, "group_size": group_size,
                                              "zero_point": True, "version": "gemm",
                                              "modules_to_not_convert": None}
            for key in ("torch_dtype", "dtype"):
                if key in new_cfg or key == "dtype":
                    new_cfg[key] = "float16"
        (tmp / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
        copy_side_files(model_dir, tmp)
        reporter.check_cancel()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(exc, out_dir) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    return AwqResult(out_dir=out_dir, seconds=time.perf_counter() - t0, layers=config.num_hidden_layers, bits=bits,
                     group_size=group_size, samples=samples, seqlen=seqlen, device=str(dev),
                     peak_memory_bytes=peak, files=sorted(p.name for p in out_dir.iterdir()))


def output_bytes(model_dir: Path, cfg: dict, mode: str) -> int:
    """About how many bytes the output takes, for the free-space check before work: "scaled" is a copy in the
    source precision; "awq" keeps embeddings in fp16 and packs the rest in 4 bits plus scales and zeros."""
    source = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    if mode != "awq":
        return source + (16 << 20)
    width = 4 if str(cfg.get("torch_dtype") or cfg.get("dtype") or "").endswith("32") else 2
    params = source // width
    embed = int(cfg.get("vocab_size") or 0) * int(cfg.get("hidden_size") or 0)
    embed = min(params, embed * (1 if cfg.get("tie_word_embeddings") else 2))
    return int(2 * embed + 0.6 * (params - embed)) + (16 << 20)


def _write_layer(writer, layer, lq: LayerQuantizer, prefix, mode, group_size, bits, src_dtype):
    state, fp = layer.state_dict(), lq.fp
    for name, t in state.items():
        mod = name.rsplit(".", 1)[0]
        if mod in fp and name.endswith(".weight"):
            w = fp[mod]
            if mode == "awq":
                iw, sc, zr = lq.codes.get(mod) or search.quantize_int(w, group_size, bits)
                qweight, qzeros, scales = pack_gemm(iw, zr, sc)
                writer.add(prefix + mod + ".qweight", qweight)
                writer.add(prefix + mod + ".qzeros", qzeros)
                writer.add(prefix + mod + ".scales", scales)
            else:
                writer.add(prefix + name, w.to(src_dtype))
        else:
            writer.add(prefix + name, t.to(torch.float16 if mode == "awq" else src_dtype))


def quantize_awq(model_dir, out_dir, *, bits: int = 4, group_size: int = 128, calibration=None,
                 samples: int = 128, seqlen: int = 512, device: str = "cpu", reporter: Reporter | None = None,
                 search_samples: int | None = 4, overwrite: bool = False) -> AwqResult:
    """Quantize a folder of a family AWQ serves (``awq_family_names()``) to AWQ (GEMM layout) in ``out_dir``.

    ``search_samples`` of the ``samples`` calibration blocks are used where the scale search has to
    run the attention or MLP block (all samples feed every statistic and the clipping search).
    """
    return _run(model_dir, out_dir, mode="awq", bits=bits, group_size=group_size, calibration=calibration,
                samples=samples, seqlen=seqlen, device=device, reporter=reporter,
                search_samples=search_samples, overwrite=overwrite, clip=True)


def apply_awq_to_weights(model_dir, out_dir, *, bits: int = 4, group_size: int = 128, calibration=None,
                         samples: int = 128, seqlen: int = 512, device: str = "cpu",
                         reporter: Reporter | None = None, search_samples: int | None = 4,
                         clip: bool = True, overwrite: bool = False) -> AwqResult:
    """Write a full-precision Hugging Face folder whose weights carry AWQ's scales (and clipping).

    The model computes the same function as the original (scales are folded, not added); its
    weights are easier to quantize, which is what ``--awq`` feeds to GGUF quantization.
    """
    return _run(model_dir, out_dir, mode="scaled", bits=bits, group_size=group_size, calibration=calibration,
                samples=samples, seqlen=seqlen, device=device, reporter=reporter,
                search_samples=search_samples, overwrite=overwrite, clip=clip)
