"""AWQ of one decoder layer, as its family's :class:`~engine.models.families.base.AwqSpec` describes it.

With the calibration hidden states that the already-quantized layers before it produce:

1. q/k/v (or a fused qkv): search one scale against the attention block's output, fold it into the
   attention norm, clip, quantize;
2. o: with the quantized q/k/v feeding it, search scales (folded into v's rows where no key/value head
   is shared), clip, quantize;
3. the MLP's input linears (gate/up or a fused gate_up): with the quantized attention feeding the MLP,
   search one scale against the MLP's output, fold it into the MLP norm, clip, quantize;
4. down: with the quantized inputs feeding it, search scales (folded into up's rows), clip, quantize;
5. run the quantized layer on all calibration tokens to make the next layer's inputs.

Passes that only need a linear's inputs stop at that linear (o_proj's and down_proj's outputs there
would be thrown away), and down's inputs are kept from step 4 where memory allows, so that step 5
runs down alone rather than the whole MLP again.

Steps 3 and 5 compose the layer's residual stream from the spec (post-block norms, residual
multiplier), so the layer computed is the one the model's own forward computes.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from engine.awq import search
from engine.core.devices import free_memory


class _Captured(Exception):
    """Raised by an input hook once it has what it came for: the rest of that forward is not needed."""


class Stats:
    """Mean |x| per channel and the Gram matrix X^T X of a linear's inputs, accumulated over batches.

    X^T X is symmetric, so only the blocks on and above the diagonal are accumulated (blocks of a
    quarter of the width: 5/8 of the full product's work) and the rest is mirrored once, when read.
    """

    def __init__(self, width: int, dev: torch.device, low: torch.dtype | None = None):
        self.abs_sum = torch.zeros(width, device=dev)
        self._upper = torch.zeros(width, width, device=dev)
        self._block = max(64, -(-width // 4))
        self._low = low  # each batch's products in this precision (summed in float32), or float32 throughout
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        self.abs_sum += x.abs().sum(0, dtype=torch.float32)
        bs = self._block
        with torch.autocast(x.device.type, enabled=False):
            if self._low is None:
                x = x.float()
                for i in range(0, x.shape[1], bs):
                    self._upper[i:i + bs, i:].addmm_(x[:, i:i + bs].t(), x[:, i:])
            else:
                x = x.to(self._low)
                for i in range(0, x.shape[1], bs):
                    self._upper[i:i + bs, i:] += x[:, i:i + bs].t() @ x[:, i:]
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


def batches(n: int, chunk: int):
    for i in range(0, n, chunk):
        yield slice(i, min(i + chunk, n))


def sub(module: nn.Module, path: str) -> nn.Module:
    m = module
    for part in path.split("."):
        m = getattr(m, part)
    return m


def attention_mask(seqlen: int, window: int | None, dev: torch.device) -> torch.Tensor:
    """Additive causal mask [1, 1, L, L], limited to the last ``window`` positions when given (as
    transformers' sliding-window layers: a query sees keys less than ``window`` positions back)."""
    q = torch.arange(seqlen, device=dev)[:, None]
    k = torch.arange(seqlen, device=dev)[None, :]
    allowed = k <= q
    if window:
        allowed &= k > q - window
    mask = torch.zeros(seqlen, seqlen, device=dev)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return mask[None, None]


class LayerQuantizer:
    """Searches, folds, clips and quantizes one decoder layer in place.

    ``pos`` and ``mask`` are what the layer's attention takes (``mask`` None: plain causal attention),
    ``norm_offset`` what the family's norms add to their weight, ``residual`` the residual multiplier.
    """

    def __init__(self, layer, spec, *, pos, mask, norm_offset, residual, group_size, bits, chunk, reporter,
                 clip=True, low: torch.dtype | None = None):
        self.layer, self.spec, self.pos, self.mask = layer, spec, pos, mask
        self.low = low  # forward passes and statistics' products in this precision (None: float32)
        self.offset, self.residual = norm_offset, residual
        self.g, self.bits, self.chunk, self.reporter, self.clip = group_size, bits, chunk, reporter, clip
        self.fp: dict[str, torch.Tensor] = {}  # scaled, clipped full-precision weights
        self.codes: dict[str, tuple] = {}  # (int weights, scales, zeros) of linears a later scale was folded into
        self.attn_mod, self.mlp = sub(layer, spec.attn), sub(layer, spec.mlp)
        self.attn_norm, self.mlp_norm = sub(layer, spec.attn_norm), sub(layer, spec.mlp_norm)

    def check(self):
        self.reporter.check_cancel()

    def fwd(self):
        """The context the layer's forward passes run in: autocast to ``low`` where it is set."""
        dev = self.attn_norm.weight.device.type
        return torch.autocast(dev, dtype=self.low) if self.low is not None else contextlib.nullcontext()

    def stats(self, width: int, dev: torch.device) -> Stats:
        return Stats(width, dev, self.low)

    def attn(self, x):
        with self.fwd():
            out = self.attn_mod(hidden_states=x, position_embeddings=self.pos, attention_mask=self.mask)
        return out[0] if isinstance(out, tuple) else out

    def mlp_fwd(self, x):
        with self.fwd():
            return self.mlp(x)

    def linear(self, lin: nn.Linear, x):
        with self.fwd():
            return lin(x)

    def _residual_part(self, y, post_norm: str):
        """A block's output as the residual stream receives it."""
        if post_norm:
            y = sub(self.layer, post_norm)(y)
        return y * self.residual if self.residual != 1.0 else y

    def _block_error_fn(self, fn, xs, ref):
        def err():
            total = torch.zeros((), device=xs.device, dtype=torch.float64)
            for b in batches(xs.shape[0], self.chunk):
                total += (fn(xs[b]) - ref[b]).pow(2).sum(dtype=torch.float64)
            return total
        return err

    def _set_fn(self, names):
        def set_weights(ws):
            for n, w in zip(names, ws):
                sub(self.layer, n).weight.data = w
        return set_weights

    def _finish_linear(self, name, h):
        """Clip (unless q/k) against inputs with Gram ``h``, keep the fp weight, install its fake quantization."""
        lin = sub(self.layer, name)
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
        ref = torch.cat([block(xs[b]) for b in batches(xs.shape[0], self.chunk)])
        ws = [sub(self.layer, k).weight.data for k in names]
        s = search.search_scale_block(ws, self._set_fn(names), self._block_error_fn(block, xs, ref),
                                      st.mean, self.g, self.bits, check=self.check)
        norm.weight.data = (norm.weight.data + self.offset) / s - self.offset
        for k in names:
            sub(self.layer, k).weight.data = sub(self.layer, k).weight.data * s
        h = st.gram / torch.outer(s, s)
        for k in names:
            self._finish_linear(k, h)
        self.check()

    def _fold_into_producer(self, producer: str, consumer: nn.Linear, s: torch.Tensor) -> None:
        """Divide the rows of ``producer`` that make ``consumer``'s input (its last ones) by ``s``.

        ``producer`` is quantized already: its integer weights stay and each row's group scales are
        divided by its ``s`` (rounded to fp16 as stored), so its outputs become the quantized ones divided
        by ``s`` to within fp16 rounding, and ``consumer``'s inputs kept from before can be divided too."""
        lin = sub(self.layer, producer)
        rows = slice(lin.out_features - consumer.in_features, None)
        iw, scales, zeros = self.codes.get(producer) or search.quantize_int(self.fp[producer], self.g, self.bits)
        w = self.fp[producer].clone()
        w[rows] /= s[:, None]
        self.fp[producer] = w  # what a full-precision output with the scales folded holds
        scales = scales.clone()
        scales[rows] = (scales[rows] / s[:, None]).to(torch.float16).to(scales.dtype)
        self.codes[producer] = (iw, scales, zeros)
        lin.weight.data = search.dequantize_int(iw, scales, zeros, self.g)
        if lin.bias is not None:
            lin.bias.data[rows] /= s
        consumer.weight.data = consumer.weight.data * s

    def _inputs_of(self, lin: nn.Linear, run, n: int, keep: torch.Tensor | None = None) -> Stats:
        """Statistics of ``lin``'s inputs while ``run(rows)`` runs over all ``n`` samples (kept in ``keep``).
        Each run stops where ``lin`` would start: its output is not needed."""
        st = self.stats(lin.in_features, keep.device if keep is not None else lin.weight.device)
        rows = slice(0)

        def hook(_m, a):
            st.add(a[0])
            if keep is not None:
                keep[rows] = a[0]
            raise _Captured

        handle = lin.register_forward_pre_hook(hook)
        try:
            for rows in batches(n, self.chunk):
                try:
                    run(rows)
                except _Captured:
                    pass
        finally:
            handle.remove()
        return st

    def _mlp_ends_in(self, down: nn.Linear, xs: torch.Tensor) -> bool:
        """Whether the MLP's output is ``down``'s output (nothing after it), tried on ``xs``."""
        seen = []
        handle = down.register_forward_hook(lambda _m, _a, y: seen.append(y))
        try:
            y = self.mlp_fwd(self.mlp_norm(xs))
        finally:
            handle.remove()
        return len(seen) == 1 and y is seen[0]

    def _down_inputs_buffer(self, x: torch.Tensor, down: nn.Linear) -> torch.Tensor | None:
        """Room for down's inputs over all samples, where they fit in a third of the free memory and
        the MLP ends in down (then step 5 runs down alone); None otherwise."""
        need = x.shape[0] * x.shape[1] * down.in_features * x.element_size()
        avail = free_memory(str(x.device))
        if (avail is not None and need > avail / 3) or not self._mlp_ends_in(down, x[:1]):
            return None
        return torch.empty(*x.shape[:2], down.in_features, device=x.device, dtype=x.dtype)

    def run(self, x: torch.Tensor, out: torch.Tensor, search_idx: torch.Tensor) -> None:
        """Quantize the layer for inputs ``x`` [N, L, d]; write its quantized outputs to ``out``."""
        spec, n, dev = self.spec, x.shape[0], x.device

        # 1. q, k, v
        st = self.stats(x.shape[-1], dev)
        for b in batches(n, self.chunk):
            st.add(self.attn_norm(x[b]))
        self._scale_block(self.attn_norm, list(spec.qkv), self.attn, x[search_idx], st)
        del st

        # 2. o, fed by the quantized q/k/v. Its inputs are kept for step 3, which then needs no second
        # pass through attention.
        o = sub(self.layer, spec.o)
        o_in = torch.empty(*x.shape[:2], o.in_features, device=dev, dtype=x.dtype)
        st = self._inputs_of(o, lambda rows: self.attn(self.attn_norm(x[rows])), n, o_in)
        s = search.search_scale_linear(o.weight.data, st.gram, st.mean, self.g, self.bits, check=self.check)
        if getattr(self.attn_mod, "num_key_value_groups", 1) == 1:
            self._fold_into_producer(spec.v, o, s)
            h = st.gram / torch.outer(s, s)
            # v's outputs are now divided by s: attention is linear in v, so o's inputs are too. (Exact
            # but for the fp16 rounding of v's new group scales, a relative 2^-11.)
            o_in /= s
        else:  # grouped-query attention: v's outputs are shared by several heads, no fold possible
            h = st.gram
        self._finish_linear(spec.o, h)
        del st, h
        self.check()

        # 3. the MLP's inputs, fed by the quantized attention; out holds the residual stream after attention
        st = self.stats(x.shape[-1], dev)
        for b in batches(n, self.chunk):
            out[b] = x[b] + self._residual_part(self.linear(o, o_in[b]), spec.attn_post_norm)
            st.add(self.mlp_norm(out[b]))
        del o_in
        self._scale_block(self.mlp_norm, list(spec.mlp_in), self.mlp_fwd, out[search_idx], st)
        del st

        # 4. down, fed by the quantized gate/up
        down = sub(self.layer, spec.down)
        down_in = self._down_inputs_buffer(out, down)
        st = self._inputs_of(down, lambda rows: self.mlp_fwd(self.mlp_norm(out[rows])), n, down_in)
        s = search.search_scale_linear(down.weight.data, st.gram, st.mean, self.g, self.bits, check=self.check)
        self._fold_into_producer(spec.up, down, s)
        if down_in is not None:
            down_in /= s  # as o_in above: up's outputs are now divided by s, to within fp16 rounding
        self._finish_linear(spec.down, st.gram / torch.outer(s, s))
        del st
        self.check()

        # 5. the quantized layer's outputs feed the next layer
        for b in batches(n, self.chunk):
            y = self.linear(down, down_in[b]) if down_in is not None else self.mlp_fwd(self.mlp_norm(out[b]))
            out[b] = out[b] + self._residual_part(y, spec.mlp_post_norm)
