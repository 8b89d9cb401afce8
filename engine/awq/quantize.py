"""AWQ quantization of a Hugging Face causal LM, one decoder layer at a time.

For each decoder layer, with the calibration hidden states that the already-quantized layers
before it produce:

1. q/k/v: search scales against the attention block's output, fold them into ``input_layernorm``,
   clip v, quantize q, k, v;
2. o: with the quantized q/k/v feeding it, search scales (folded into ``v_proj`` where shapes
   allow), clip, quantize;
3. gate/up: with the quantized attention feeding the MLP, search scales against the MLP's output,
   fold into ``post_attention_layernorm``, clip, quantize;
4. down: with the quantized gate/up feeding it, search scales (folded into ``up_proj``), clip,
   quantize;
5. run the quantized layer on all calibration tokens to make the next layer's inputs.

Only one layer's weights are materialised at a time; the rest of the model stays on the meta
device. The output is written under a temporary name next to the target and renamed at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.awq import search
from engine.awq.calibration import calibration_blocks
from engine.awq.config import awq_family, check_group_size, check_memory, read_config, resolve_device
from engine.awq.io import ShardWriter, WeightReader, copy_side_files
from engine.awq.pack import pack_gemm
from engine.core.errors import NibbleError, check_at_least
from engine.core.outputs import check_free_space, check_output, temp_path, write_error
from engine.core.progress import Reporter



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

class _Stats:
    """Mean |x| per channel and the Gram matrix X^T X of a linear's inputs, accumulated over batches.

    X^T X is symmetric, so only the blocks on and above the diagonal are accumulated (blocks of a
    quarter of the width: 5/8 of the full product's work) and the rest is mirrored once, when read.
    """

    def __init__(self, width: int, dev: torch.device):
        self.abs_sum = torch.zeros(width, device=dev)
        self._upper = torch.zeros(width, width, device=dev)
        self._block = max(64, -(-width // 4))
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.abs_sum += x.abs().sum(0)
        bs = self._block
        for i in range(0, x.shape[1], bs):
            self._upper[i:i + bs, i:].addmm_(x[:, i:i + bs].t(), x[:, i:])
        self.count += x.shape[0]

    @property
    def gram(self) -> torch.Tensor:
        g, bs = self._upper, self._block
        for i in range(0, g.shape[0], bs):
            g[i + bs:, i:i + bs] = g[i:i + bs, i + bs:].t()
        return g

    @property
    def mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.count, 1)


def _batches(n: int, chunk: int):
    for i in range(0, n, chunk):
        yield slice(i, min(i + chunk, n))


def _build_model_skeleton(model_dir: Path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, attn_implementation="sdpa")
    return config, model


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as exc:
        raise NibbleError(f"{model_dir}: cannot load the tokenizer ({exc}); the folder needs tokenizer files") from exc


def _materialise_layer(layer: nn.Module, prefix: str, reader: WeightReader, dev: torch.device) -> nn.Module:
    layer.to_empty(device=dev)
    layer.float()
    state = {}
    for name, t in layer.state_dict().items():
        state[name] = reader.get(prefix + name).to(device=dev, dtype=torch.float32)
    layer.load_state_dict(state, strict=True)
    layer.requires_grad_(False)
    return layer


def _sub(layer: nn.Module, path: str) -> nn.Module:
    m = layer
    for part in path.split("."):
        m = getattr(m, part)
    return m


# ----------------------------------------------------------------------------- the layer

class _LayerQuantizer:
    """Searches, folds, clips and quantizes one decoder layer in place."""

    def __init__(self, layer, spec, pos, group_size, bits, chunk, reporter, clip=True):
        self.layer, self.spec, self.pos, self.g, self.bits = layer, spec, pos, group_size, bits
        self.chunk, self.reporter, self.clip = chunk, reporter, clip
        self.fp: dict[str, torch.Tensor] = {}  # scaled, clipped full-precision weights

    def check(self):
        self.reporter.check_cancel()

    def attn(self, x):
        out = self.layer.self_attn(hidden_states=x, position_embeddings=self.pos, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    def _block_error_fn(self, fn, xs, ref):
        def err():
            total = torch.zeros((), device=xs.device, dtype=torch.float64)
            for b in _batches(xs.shape[0], self.chunk):
                total += (fn(xs[b]) - ref[b]).pow(2).sum(dtype=torch.float64)
            return total
        return err

    def _set_fn(self, names):
        def set_weights(ws):
            for n, w in zip(names, ws):
                _sub(self.layer, n).weight.data = w
        return set_weights

    def _finish_linear(self, name, h):
        """Clip (unless q/k) against inputs with Gram ``h``, keep the fp weight, install its fake quantization."""
        lin = _sub(self.layer, name)
        w = lin.weight.data
        if self.clip and name not in self.spec.no_clip:
            max_val = search.search_clip(w, h, self.g, self.bits, check=self.check)
            w = search.apply_clip(w, max_val, self.g)
        self.fp[name] = w
        lin.weight.data = search.fake_quantize(w, self.g, self.bits)

    def _scale_block(self, norm, names, block, x_search, st) -> None:
        """Search one scale for the linears ``names`` that share ``norm``'s output, judged by ``block``'s
        output error on ``x_search``; fold it into the norm, then quantize the scaled linears."""
        xs = norm(x_search)
        ref = torch.cat([block(xs[b]) for b in _batches(xs.shape[0], self.chunk)])
        ws = [_sub(self.layer, k).weight.data for k in names]
        s = search.search_scale_block(ws, self._set_fn(names), self._block_error_fn(block, xs, ref),
                                      st.mean, self.g, self.bits, check=self.check)
        norm.weight.data /= s
        for k in names:
            _sub(self.layer, k).weight.data = _sub(self.layer, k).weight.data * s
        h = st.gram / torch.outer(s, s)
        for k in names:
            self._finish_linear(k, h)
        self.check()

    def run(self, x: torch.Tensor, out: torch.Tensor, search_idx: torch.Tensor) -> None:
        """Quantize the layer for inputs ``x`` [N, L, d]; write its quantized outputs to ``out``."""
        L = self.layer
        attn, mlp = L.self_attn, L.mlp
        n = x.shape[0]
        dev = x.device
        qkv = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]

        # 1. q, k, v
        st = _Stats(x.shape[-1], dev)
        for b in _batches(n, self.chunk):
            st.add(L.input_layernorm(x[b]))
        self._scale_block(L.input_layernorm, qkv, self.attn, x[search_idx], st)
        del st

        # 2. o, fed by the quantized q/k/v. Its inputs are kept for step 3, which then needs no second
        # pass through attention.
        v, o = attn.v_proj, attn.o_proj
        fold_v = v.out_features == o.in_features
        st = _Stats(o.in_features, dev)
        o_in = torch.empty(*x.shape[:2], o.in_features, device=dev, dtype=x.dtype)

        rows = slice(0)

        def keep(_m, a):
            st.add(a[0])
            o_in[rows] = a[0]

        hook = o.register_forward_pre_hook(keep)
        try:
            for rows in _batches(n, self.chunk):
                self.attn(L.input_layernorm(x[rows]))
        finally:
            hook.remove()
        s = search.search_scale_linear(o.weight.data, st.gram, st.mean, self.g, self.bits, check=self.check)
        if fold_v:
            self.fp["self_attn.v_proj"] = self.fp["self_attn.v_proj"] / s[:, None]
            v.weight.data = search.fake_quantize(self.fp["self_attn.v_proj"], self.g, self.bits)
            if v.bias is not None:
                v.bias.data /= s
            o.weight.data = o.weight.data * s
            h = st.gram / torch.outer(s, s)
            # v's outputs are now divided by s: attention is linear in v, so o's inputs are too. (Exact
            # but for the fp16 rounding of v's new group scales, a relative 2^-11.)
            o_in /= s
        else:  # grouped-query attention: v's outputs are shared by several heads, no fold possible
            h = st.gram
        self._finish_linear("self_attn.o_proj", h)
        del st, h
        self.check()

        # 3. gate, up, fed by the quantized attention; out holds the residual stream after attention
        st = _Stats(x.shape[-1], dev)
        for b in _batches(n, self.chunk):
            out[b] = x[b] + o(o_in[b])
            st.add(L.post_attention_layernorm(out[b]))
        del o_in
        self._scale_block(L.post_attention_layernorm, ["mlp.gate_proj", "mlp.up_proj"], mlp, out[search_idx], st)
        del st

        # 4. down, fed by the quantized gate/up
        st = _Stats(mlp.down_proj.in_features, dev)
        for b in _batches(n, self.chunk):
            y = L.post_attention_layernorm(out[b])
            st.add(mlp.act_fn(mlp.gate_proj(y)) * mlp.up_proj(y))
        up, down = mlp.up_proj, mlp.down_proj
        s = search.search_scale_linear(down.weight.data, st.gram, st.mean, self.g, self.bits, check=self.check)
        self.fp["mlp.up_proj"] = self.fp["mlp.up_proj"] / s[:, None]
        up.weight.data = search.fake_quantize(self.fp["mlp.up_proj"], self.g, self.bits)
        down.weight.data = down.weight.data * s
        self._finish_linear("mlp.down_proj", st.gram / torch.outer(s, s))
        del st
        self.check()

        # 5. the quantized layer's outputs feed the next layer
        for b in _batches(n, self.chunk):
            out[b] = out[b] + mlp(L.post_attention_layernorm(out[b]))


# ----------------------------------------------------------------------------- the job

def _run(model_dir, out_dir, *, mode, bits, group_size, calibration, samples, seqlen, device, reporter,
         search_samples, overwrite, clip) -> AwqResult:
    t0 = time.perf_counter()
    reporter = reporter or Reporter()
    from engine.models.source import resolve_model_path

    model_dir, out_dir = resolve_model_path(model_dir), Path(out_dir).expanduser()
    raw_cfg = read_config(model_dir)
    spec = awq_family(raw_cfg, str(model_dir / "config.json")).awq
    check_at_least(samples, 1, "--samples")
    check_at_least(seqlen, 2, "--seqlen")
    longest = raw_cfg.get("max_position_embeddings")
    if isinstance(longest, int) and seqlen > longest:
        raise NibbleError(f"--seqlen {seqlen} is longer than the model's context ({longest} tokens); "
                          f"use --seqlen {min(512, longest)} or less")
    dev = resolve_device(device)
    check_output(out_dir, inputs=[model_dir], folder_output=True)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise NibbleError(f"{out_dir} already exists and is not empty; choose another --out or remove it")
    check_free_space(out_dir.parent, output_bytes(model_dir, raw_cfg, mode))
    config, model = _build_model_skeleton(model_dir)
    check_group_size(config, bits, group_size)
    search_samples = min(samples, search_samples or samples)
    chunk = max(1, 8192 // seqlen)
    check_memory(config, dev, samples, seqlen, search_samples, chunk)
    reader = WeightReader(model_dir)
    tokenizer = _load_tokenizer(model_dir)
    ids = calibration_blocks(tokenizer, calibration, samples, seqlen, model_dir=model_dir)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    tmp = temp_path(out_dir, "partial")
    try:
        tmp.mkdir()
        writer = ShardWriter(tmp)
        n_layers = config.num_hidden_layers
        reporter.progress(0, n_layers, "embedding calibration tokens")
        with torch.inference_mode():
            emb = reader.get("model.embed_tokens.weight")
            x = emb[ids].to(device=dev, dtype=torch.float32)
            rotary = type(model.model.rotary_emb)(config=config).to(dev)
            pos_ids = torch.arange(seqlen, device=dev)[None]
            cos, sin = rotary(x[:1], pos_ids)
            pos = (cos.float(), sin.float())
            out = torch.empty_like(x)
            gen = torch.Generator().manual_seed(0)
            search_idx = torch.randperm(samples, generator=gen)[:search_samples].sort().values.to(dev)
            for i in range(n_layers):
                reporter.check_cancel()
                prefix = f"model.layers.{i}."
                layer = _materialise_layer(model.model.layers[i], prefix, reader, dev)
                src_dtype = reader.get(prefix + spec.linears[0] + ".weight").dtype
                lq = _LayerQuantizer(layer, spec, pos, group_size, bits, chunk, reporter, clip=clip)
                lq.run(x, out, search_idx)
                _write_layer(writer, layer, lq.fp, prefix, mode, group_size, bits, src_dtype)
                layer.to_empty(device="meta")
                x, out = out, x
                reporter.progress(i + 1, n_layers, f"layer {i + 1}/{n_layers} quantized")
            del x, out
            reporter.check_cancel()
            for name in reader.names():
                if not name.startswith("model.layers."):
                    t = reader.get(name)
                    writer.add(name, t.to(torch.float16) if mode == "awq" and t.is_floating_point() else t)
        files = writer.finish()
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


def _write_layer(writer, layer, fp, prefix, mode, group_size, bits, src_dtype):
    state = layer.state_dict()
    for name, t in state.items():
        mod = name.rsplit(".", 1)[0]
        if mod in fp and name.endswith(".weight"):
            w = fp[mod]
            if mode == "awq":
                iw, sc, zr = search.quantize_int(w, group_size, bits)
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
    """Quantize a Llama/Mistral/Qwen2/Qwen3 folder to AWQ (GEMM layout) in ``out_dir``.

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
