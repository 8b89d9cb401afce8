"""How far each weight matrix moves when quantized to each candidate type, weighted by how much it matters.

Runs where llama.cpp's libraries are loaded (the worker, ``engine.gguf.worker``): each tensor of the
unquantized GGUF is quantized with ggml's own ``ggml_quantize_chunk`` (the function llama.cpp's quantizer
calls, with the same importance matrix) and turned back into floats with the type's ``to_float``; the
squared difference is summed with the sensitivity weights of ``engine.gguf.sensitivity``:

    error(tensor, type) = sum over pairs (r, c) of  sum_ij r_i c_j (W_ij - Q(W)_ij)^2

Large tensors are measured on an even sample of their rows and scaled up.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np

from engine.core.progress import Reporter

QT = gguf.GGMLQuantizationType
MAX_ROWS = 2048  # rows measured a tensor; more are sampled evenly


class _Traits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p), ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class Ggml:
    """ggml's quantize and dequantize for one type at a time, through ctypes."""

    def __init__(self):
        from engine.gguf.imatrix import _ggml_base

        lib = _ggml_base()
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        self.lib = lib

    def roundtrip(self, qtype: QT, rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        """``rows`` [n, k] float32 quantized to ``qtype`` and back."""
        n, k = rows.shape
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        blk, size = gguf.GGML_QUANT_SIZES[qtype]
        buf = np.empty(n * (k // blk) * size, dtype=np.uint8)
        imp = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        self.lib.ggml_quantize_chunk(int(qtype), rows.ctypes.data, buf.ctypes.data, 0, n, k,
                                     None if imp is None else imp.ctypes.data)
        out = np.empty((n, k), dtype=np.float32)
        to_float = _TO_FLOAT(self.lib.ggml_get_type_traits(int(qtype)).contents.to_float)
        to_float(buf.ctypes.data, out.ctypes.data, n * k)
        return out


def tensor_f32(t) -> np.ndarray:
    """A GGUF reader tensor as float32 rows [rows, ne0] (F32, F16 and BF16 sources)."""
    ne0 = int(t.shape[0])
    qt = QT(int(t.tensor_type))
    raw = np.asarray(t.data)
    if qt == QT.F32:
        data = raw.astype(np.float32, copy=False)
    elif qt == QT.F16:
        data = raw.view(np.float16).astype(np.float32)
    elif qt == QT.BF16:
        data = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        raise ValueError(f"{t.name}: {qt.name} is not an unquantized type")
    return data.reshape(-1, ne0)


def _weighted(delta2: np.ndarray, pairs, rows_idx: np.ndarray, n_rows: int) -> float:
    total = 0.0
    for r, c in pairs:
        rw = np.ones(len(rows_idx)) if r is None else np.asarray(r, dtype=np.float64)[rows_idx]
        cw = np.ones(delta2.shape[1]) if c is None else np.asarray(c, dtype=np.float64)
        if cw.size == 1:  # one scale for the whole tensor
            cw = np.full(delta2.shape[1], float(cw[0]))
        total += float(rw @ (delta2 @ cw))
    return total * n_rows / len(rows_idx)


def measure_errors(gguf_path: str | Path, candidates: dict[str, list[str]], weights: dict[str, list],
                   imatrix: dict[str, np.ndarray], *, threads: int = 2,
                   reporter: Reporter | None = None) -> dict[str, dict[str, float]]:
    """For each tensor name in ``candidates``: {type name: weighted squared error}.

    ``weights[name]`` is a list of (row weights or None, column weights or None) pairs; ``imatrix`` the
    per-column importance the quantizer will be given (per expert for 3-D tensors, stacked).
    """
    reporter = reporter or Reporter()
    g = Ggml()
    reader = gguf.GGUFReader(str(gguf_path))
    by_name = {t.name: t for t in reader.tensors}
    out: dict[str, dict[str, float]] = {}
    names = [n for n in candidates if n in by_name]
    pool = ThreadPoolExecutor(max(1, threads))
    try:
        for i, name in enumerate(names, 1):
            reporter.check_cancel()
            t = by_name[name]
            w = tensor_f32(t)
            n_rows, ne0 = w.shape
            idx = np.arange(n_rows) if n_rows <= MAX_ROWS else np.linspace(0, n_rows - 1, MAX_ROWS).astype(np.int64)
            rows = w[idx]
            im = imatrix.get(name)
            per_expert = n_rows // (im.size // ne0) if im is not None and im.size > ne0 else n_rows
            pairs = weights.get(name) or [(None, None)]

            def one(type_name: str) -> tuple[str, float]:
                qt = QT[type_name]
                if qt in (QT.F32, QT.BF16) or (qt == QT.F16 and QT(int(t.tensor_type)) == QT.F16):
                    return type_name, 0.0
                if qt == QT.F16:
                    back = rows.astype(np.float16).astype(np.float32)
                elif im is not None and im.size > ne0:  # experts: each block of rows has its own importance
                    back = np.empty_like(rows)
                    for e in np.unique(idx // per_expert):
                        sel = (idx // per_expert) == e
                        back[sel] = g.roundtrip(qt, rows[sel], im[e * ne0:(e + 1) * ne0])
                else:
                    back = g.roundtrip(qt, rows, im)
                d = back - rows
                return type_name, _weighted(d.astype(np.float64) ** 2, pairs, idx, n_rows)

            out[name] = dict(pool.map(one, candidates[name]))
            reporter.progress(i, len(names), f"{name}: error at {len(candidates[name])} types", stage="measure")
    finally:
        pool.shutdown()
    return out
