"""AWQ's two searches: per-channel scales for linears sharing an input, and per-group clipping.

The grids are AutoAWQ's: scales ``s = x_mean^r / w_mean^(1-r)`` for ``r`` in 0, 1/20, ..., 19/20
(normalised so ``max*min = 1``), and clipping of each (output channel, group) to 100%, 95%, ..., 55%
of its largest magnitude. Three differences make the search faster and its statistics fuller:

* when the block whose error is minimised is a single linear (``o_proj``, ``down_proj``) and for
  every clipping search, the squared output error over all calibration tokens is computed exactly
  from the input Gram matrix ``H = X^T X``: ``err = tr(dW H dW^T)``. The cost no longer grows with the
  number of tokens, so all of them count (AutoAWQ subsamples 512 tokens for clipping);
* the unscaled weights (``s = 1``, plain round-to-nearest) are a candidate too, so the search never
  ends worse than RTN on its own objective;
* the scale grid is walked coarse to fine (:func:`walk_grid`): 10 or 11 of its 21 candidates are
  tried, and where the error has one minimum along the grid, the one found is the grid's best.
"""

from __future__ import annotations

from typing import Callable

import torch

N_GRID = 20
MAX_SHRINK = 0.5


def quant_params(w: torch.Tensor, group_size: int, bits: int = 4):
    """Asymmetric per-group parameters for ``w`` [out, in]: ``(scales, zeros)`` each [out, in/G].

    Scales are rounded to fp16, as they are stored, so fake quantization matches the saved model.
    """
    qmax = 2 ** bits - 1
    g = w.reshape(w.shape[0], -1, group_size)
    mx, mn = g.amax(dim=-1), g.amin(dim=-1)
    scales = ((mx - mn).clamp(min=1e-5) / qmax).to(torch.float16).to(w.dtype)
    zeros = (-torch.round(mn / scales)).clamp(0, qmax)
    return scales, zeros


def quantize_int(w: torch.Tensor, group_size: int, bits: int = 4):
    """``(intweight [out,in], scales [out,G], zeros [out,G])`` for ``w``: what the packed file holds."""
    scales, zeros = quant_params(w, group_size, bits)
    g = w.reshape(w.shape[0], -1, group_size)
    q = (torch.round(g / scales.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp(0, 2 ** bits - 1)
    return q.reshape(w.shape).to(torch.int32), scales, zeros.to(torch.int32)


def dequantize_int(intweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """The weights [out, in] that :func:`quantize_int`'s ``(intweight, scales, zeros)`` stand for."""
    q = intweight.reshape(intweight.shape[0], -1, group_size).to(scales.dtype)
    return ((q - zeros.unsqueeze(-1).to(scales.dtype)) * scales.unsqueeze(-1)).reshape(intweight.shape)


def fake_quantize(w: torch.Tensor, group_size: int, bits: int = 4) -> torch.Tensor:
    """Round-to-nearest quantize and dequantize ``w`` [..., out, in] with asymmetric groups along ``in``.

    Leading dimensions are independent weights (e.g. a stack of scale candidates).
    """
    shape = w.shape
    g = w.reshape(-1, group_size)
    qmax = 2 ** bits - 1
    mx, mn = g.amax(dim=-1, keepdim=True), g.amin(dim=-1, keepdim=True)
    scales = ((mx - mn).clamp_(min=1e-5) / qmax).to(torch.float16).to(w.dtype)
    zeros = torch.round(mn / scales).neg_().clamp_(0, qmax)
    q = torch.round(g / scales).add_(zeros).clamp_(0, qmax)
    return q.sub_(zeros).mul_(scales).reshape(shape)


def weight_mean(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """AutoAWQ's ``w_mean``: mean over output rows of |w| relative to its group's largest |w|."""
    w = torch.cat(weights, dim=0)
    g = w.abs().reshape(-1, group_size)
    g = g / (g.amax(dim=1, keepdim=True) + 1e-6)
    return g.reshape(w.shape).mean(dim=0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor, n_grid: int = N_GRID):
    """Yield the grid of per-input-channel scales; the first candidate is all ones (RTN)."""
    yield torch.ones_like(x_mean)
    for i in range(n_grid):
        r = i / n_grid
        s = (x_mean.pow(r) / (w_mean.pow(1 - r) + 1e-4)).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        yield s


def gram_error(dw: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``tr(dW H dW^T)``: the summed squared output error of a weight error ``dW`` on inputs with Gram ``H``."""
    return ((dw @ h) * dw).sum()


def search_scale_linear(weight: torch.Tensor, h: torch.Tensor, x_mean: torch.Tensor, group_size: int,
                        bits: int = 4, check: Callable[[], None] | None = None, batch: int = 7) -> torch.Tensor:
    """Best scales for one linear, minimising its exact output error over all tokens via ``H``.

    Candidates are quantized and scored ``batch`` at a time: ``tr(dW H dW^T)`` for a stack of ``dW``.
    """
    w_mean = weight_mean([weight], group_size)
    cands = list(candidate_scales(x_mean, w_mean))

    def errors(idx: list[int]) -> list[torch.Tensor]:
        out = []
        for c0 in range(0, len(idx), batch):
            if check:
                check()
            s = torch.stack([cands[i] for i in idx[c0:c0 + batch]])[:, None, :]  # [b, 1, in]
            dw = weight - fake_quantize(weight * s, group_size, bits) / s
            out.extend(((dw @ h) * dw).sum(dim=(1, 2)))
        return out

    return cands[walk_grid(errors, len(cands) - 1)]


def search_scale_block(weights: list[torch.Tensor], set_weights: Callable[[list[torch.Tensor]], None],
                       block_error: Callable[[], torch.Tensor], x_mean: torch.Tensor, group_size: int,
                       bits: int = 4, check: Callable[[], None] | None = None, batch: int = 4) -> torch.Tensor:
    """Best scales for linears sharing one input, minimising the error of the block they feed.

    ``set_weights`` installs trial weights in the block, ``block_error`` runs it on the calibration
    inputs and returns its squared error against the original block's output. The original weights
    are put back before returning.

    Each trial runs the whole block, so the grid is walked coarse to fine: RTN and every fourth ratio
    first, then the ratios around the best of those (:func:`refined_grid`), 10 or 11 trials of 21.
    """
    w_mean = weight_mean(weights, group_size)
    cands = list(candidate_scales(x_mean, w_mean))

    def errors(idx: list[int]) -> list[torch.Tensor]:
        out = []
        for c0 in range(0, len(idx), batch):  # a few candidates' weights at a time bound the memory
            cs = torch.stack([cands[i] for i in idx[c0:c0 + batch]])[:, None, :]
            trials = [fake_quantize(w * cs, group_size, bits) / cs for w in weights]
            for c in range(cs.shape[0]):
                if check:
                    check()
                set_weights([t[c] for t in trials])
                out.append(block_error())
            del trials
        return out

    try:
        return cands[walk_grid(errors, len(cands) - 1)]
    finally:
        set_weights(weights)


def walk_grid(errors: Callable[[list[int]], list[torch.Tensor]], n_grid: int, stride: int = 4) -> int:
    """Index of the candidate with the least error, trying them coarse to fine: RTN (index 0) and every
    ``stride``-th ratio (index 1 + i for ratio i / n_grid) first, then the ratios one and two steps either
    side of the best of those, then one step further where the best moved two steps. Ten or eleven
    trials of 21 for AutoAWQ's grid; on an error curve with one minimum, the grid's best. ``errors``
    scores a list of candidate indices; ties go to the lower index."""
    errs: dict[int, float] = {}

    def score(idx):
        idx = [i for i in dict.fromkeys(idx) if 0 <= i <= n_grid and i not in errs]
        errs.update(zip(idx, (float(e) for e in errors(idx))))

    def best_ratio():
        return min((i for i in errs if i > 0), key=lambda i: (errs[i], i))

    score([0] + [1 + i for i in range(0, n_grid, stride)])
    first = best_ratio()
    score([i for i in (first - 2, first - 1, first + 1, first + 2) if i >= 1])
    b = best_ratio()
    if abs(b - first) == 2:
        score([b + (b - first) // 2] if b + (b - first) // 2 >= 1 else [])
    return min(errs, key=lambda i: (errs[i], i))


def search_clip(weight: torch.Tensor, h: torch.Tensor, group_size: int, bits: int = 4,
                n_grid: int = N_GRID, max_shrink: float = MAX_SHRINK, rows_per_batch: int = 1024,
                check: Callable[[], None] | None = None) -> torch.Tensor:
    """Largest magnitude kept per (output channel, group), shape [out, in/G, 1].

    Each group's candidate error is ``dw_g^T H_gg dw_g`` with ``H_gg`` its diagonal block of ``H``:
    the same per-group output error that AutoAWQ measures, over all tokens.
    """
    out, inp = weight.shape
    n_groups = inp // group_size
    hb = torch.stack([h[g * group_size:(g + 1) * group_size, g * group_size:(g + 1) * group_size]
                      for g in range(n_groups)])  # [G, gs, gs]
    result = []
    for r0 in range(0, out, rows_per_batch):
        w = weight[r0:r0 + rows_per_batch].reshape(-1, n_groups, group_size)
        org_max = w.abs().amax(dim=-1, keepdim=True)
        best_max = org_max.clone()
        best_err = torch.full(org_max.shape[:2], float("inf"), device=w.device, dtype=w.dtype)
        for i in range(int(max_shrink * n_grid)):
            if check:
                check()
            mx = org_max * (1 - i / n_grid)
            cw = torch.clamp(w, -mx, mx)
            d = (fake_quantize(cw.reshape(-1, inp), group_size, bits).reshape(w.shape) - w).transpose(0, 1)
            err = (torch.bmm(d, hb) * d).sum(-1).transpose(0, 1)  # [rows, G]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better.unsqueeze(-1), mx, best_max)
        result.append(best_max)
    return torch.cat(result)


def apply_clip(weight: torch.Tensor, max_val: torch.Tensor, group_size: int) -> torch.Tensor:
    """``weight`` with each (row, group) clamped to ``[-max_val, max_val]``."""
    w = weight.reshape(weight.shape[0], -1, group_size)
    return torch.clamp(w, -max_val, max_val).reshape(weight.shape)
