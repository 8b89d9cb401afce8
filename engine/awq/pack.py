"""The AutoAWQ "GEMM" tensor layout: how 4-bit weights, zero points and scales are stored.

For a linear with ``in`` inputs, ``out`` outputs and group size ``G``:

* ``qweight`` int32 ``[in, out/8]``: eight 4-bit weights a word, transposed (input-major);
* ``qzeros``  int32 ``[in/G, out/8]``: eight 4-bit zero points a word;
* ``scales``  fp16  ``[in/G, out]``.

Within a word, the value of output column ``8c + ORDER[i]`` sits at bits ``4i..4i+3``
(``ORDER = 0, 2, 4, 6, 1, 3, 5, 7``), the interleaving AutoAWQ's GEMM kernels expect.
A weight dequantizes as ``(q - zero) * scale``.
"""

from __future__ import annotations

import torch

PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# position in the word of output column j (mod 8): the inverse permutation of PACK_ORDER
UNPACK_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
BITS = 4
PER_WORD = 32 // BITS


def _pack_columns(values: torch.Tensor) -> torch.Tensor:
    """Pack an integer tensor [rows, cols] of 4-bit values into int32 [rows, cols/8]."""
    rows, cols = values.shape
    if cols % PER_WORD:
        raise ValueError(f"width {cols} is not a multiple of {PER_WORD}")
    v = values.to(torch.int32).reshape(rows, cols // PER_WORD, PER_WORD)
    v = v[:, :, list(PACK_ORDER)]
    shifts = torch.arange(0, 32, BITS, dtype=torch.int32, device=v.device)
    # bits of different nibbles do not overlap, so a sum is a bitwise or; int32 wraps into the sign bit
    return (v << shifts).sum(dim=-1, dtype=torch.int32)


def _unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_pack_columns`: int32 [rows, cols/8] -> uint8-valued int32 [rows, cols]."""
    rows, words = packed.shape
    shifts = torch.arange(0, 32, BITS, dtype=torch.int32, device=packed.device)
    v = (packed.unsqueeze(-1) >> shifts) & 0xF  # [rows, words, 8], nibble i of each word
    v = v[:, :, list(UNPACK_ORDER)]
    return v.reshape(rows, words * PER_WORD)


def pack_gemm(intweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor):
    """Pack one linear.

    ``intweight`` [out, in] integers 0..15, ``zeros`` [out, in/G] integers 0..15, ``scales`` [out, in/G].
    Returns ``(qweight, qzeros, scales)`` in the GEMM layout.
    """
    if intweight.min() < 0 or intweight.max() > 15 or zeros.min() < 0 or zeros.max() > 15:
        raise ValueError("4-bit values must lie in 0..15")
    qweight = _pack_columns(intweight.t().contiguous())
    qzeros = _pack_columns(zeros.t().contiguous())
    return qweight, qzeros, scales.t().contiguous().to(torch.float16)


def unpack_gemm(qweight: torch.Tensor, qzeros: torch.Tensor):
    """Unpack to ``(intweight [in, out], zeros [in/G, out])`` as int32."""
    return _unpack_columns(qweight), _unpack_columns(qzeros)


def dequantize_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    group_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dense weight ``[out, in]`` (nn.Linear orientation) that a GEMM-packed linear stands for."""
    iw, iz = unpack_gemm(qweight, qzeros)
    z = iz.repeat_interleave(group_size, dim=0)
    s = scales.to(dtype).repeat_interleave(group_size, dim=0)
    return ((iw - z).to(dtype) * s).t().contiguous()
