"""Importance matrices: computed by running llama.cpp over calibration text, read and written in the
formats llama.cpp's ``llama-imatrix`` uses (GGUF, and the legacy ``.dat``).

An importance matrix holds, for every weight matrix, the mean square of each input column's activation
over the calibration tokens. The quantizer weighs rounding errors by it.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.errors import NibbleError
from engine.core.progress import Reporter


# Tokens a calibration window holds (llama-imatrix's default context): what "windows" count in.
WINDOW_TOKENS = 512


@dataclass
class ImportanceMatrix:
    """Per weight name: sums of squared activations per input column, and how many tokens were summed."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def values(self) -> dict[str, np.ndarray]:
        """The per-column importance the quantizer takes: sums / counts."""
        out = {}
        for name, s in self.sums.items():
            c = self.counts.get(name, 0)
            out[name] = (s / c).astype(np.float32) if c > 0 else np.ones_like(s, dtype=np.float32)
        return out

    def add(self, name: str, x: np.ndarray) -> None:
        """Accumulate activations ``x`` [tokens, columns] entering weight ``name``."""
        sq = np.einsum("ij,ij->j", x, x, dtype=np.float64) if x.ndim == 2 else (x.astype(np.float64) ** 2)
        if name in self.sums:
            self.sums[name] += sq
            self.counts[name] += x.shape[0]
        else:
            self.sums[name] = sq
            self.counts[name] = x.shape[0]


def save_imatrix(im: ImportanceMatrix, path: str | Path) -> Path:
    """Write the GGUF imatrix format that llama-quantize and llama-imatrix read."""
    import gguf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        w = gguf.GGUFWriter(tmp, arch="")
        w.add_type(gguf.GGUFType.IMATRIX)
        w.add_array(gguf.Keys.IMatrix.DATASETS, im.datasets or ["nibble"])
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(im.chunk_count))
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(im.chunk_size))
        for name in sorted(im.sums):
            w.add_tensor(f"{name}.in_sum2", im.sums[name].astype(np.float32).reshape(1, -1))
            w.add_tensor(f"{name}.counts", np.array([[float(im.counts[name])]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_imatrix(path: str | Path) -> ImportanceMatrix:
    """Read an importance matrix written by llama-imatrix (GGUF or legacy .dat) or by Nibble."""
    path = Path(path)
    if not path.is_file():
        raise NibbleError(f"importance matrix {path} not found; check its path", setting="importance matrix")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _load_gguf_imatrix(path)
    return _load_legacy_imatrix(path)


def _load_gguf_imatrix(path: Path) -> ImportanceMatrix:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises assorted errors on corrupt files
        raise NibbleError(f"{path} is not a readable imatrix GGUF ({exc}); make it again with llama-imatrix or from calibration text",
                          setting="importance matrix") from exc
    im = ImportanceMatrix()
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.array(t.data, dtype=np.float64)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.array(t.data, dtype=np.float64).ravel()
    if not sums:
        raise NibbleError(f"{path} holds no importance matrix entries (*.in_sum2 tensors); is it an imatrix file?")
    for name, s in sums.items():
        c = counts.get(name)
        if c is None:
            raise NibbleError(f"{path}: entry {name} has sums but no counts; the file is damaged")
        s = s.reshape(len(c), -1)
        if len(c) == 1:
            im.sums[name] = s[0]
            im.counts[name] = int(round(c[0]))
        else:  # per-expert counts: normalise each slice now, keep count 1
            im.sums[name] = np.concatenate([s[j] / c[j] if c[j] > 0 else np.ones_like(s[j]) for j in range(len(c))])
            im.counts[name] = 1
    field_ = reader.get_field(gguf.Keys.IMatrix.CHUNK_COUNT)
    if field_ is not None:
        im.chunk_count = int(field_.contents())
    return im


def _load_legacy_imatrix(path: Path) -> ImportanceMatrix:
    data = path.read_bytes()
    im = ImportanceMatrix()
    try:
        (n_entries,) = struct.unpack_from("<i", data, 0)
        if n_entries < 1 or n_entries > 1_000_000:
            raise ValueError("bad entry count")
        off = 4
        for _ in range(n_entries):
            (ln,) = struct.unpack_from("<i", data, off)
            off += 4
            name = data[off : off + ln].decode("utf-8")
            off += ln
            ncall, nval = struct.unpack_from("<ii", data, off)
            off += 8
            vals = np.frombuffer(data, dtype="<f4", count=nval, offset=off).astype(np.float64)
            off += 4 * nval
            # legacy files store (sum/count)*ncall; the importance is vals/ncall
            im.sums[name] = vals
            im.counts[name] = max(int(ncall), 1) if ncall > 0 else 1
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise NibbleError(f"{path} is not an importance matrix (neither GGUF nor llama-imatrix .dat)") from exc
    return im


# --------------------------------------------------------------------------------------------
# Computing an importance matrix with llama.cpp (runs in the native worker process)


class _GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def _ggml_base():
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (libdir / name).exists():
            lib = ctypes.CDLL(str(libdir / name))
            break
    else:  # pragma: no cover - an unusual build layout
        raise NibbleError(f"llama.cpp's ggml library was not found in {libdir}; reinstall llama-cpp-python")
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


def compute_imatrix(
    gguf_path: str | Path,
    text: str,
    *,
    ctx: int = WINDOW_TOKENS,
    max_chunks: int | None = None,
    threads: int | None = None,
    reporter: Reporter | None = None,
    dataset_name: str = "calibration",
) -> ImportanceMatrix:
    """Run the model in ``gguf_path`` over ``text`` in windows of ``ctx`` tokens and collect activations.

    Follows llama-imatrix: every window starts with BOS, all its tokens are evaluated, and for every
    weight matrix the squared inputs are summed per column (the output matrix is left out).
    """
    import llama_cpp as L

    reporter = reporter or Reporter()
    g = _ggml_base()
    mul_mat = next(i for i in range(200) if g.ggml_op_name(i) == b"MUL_MAT")
    im = ImportanceMatrix(datasets=[dataset_name], chunk_size=ctx)
    errors: list[BaseException] = []

    def on_eval(t_ptr, ask, _user):
        try:
            t = _GgmlTensor.from_address(t_ptr)
            if t.op != mul_mat:
                return False if ask else True
            src0 = _GgmlTensor.from_address(t.src[0])
            name = src0.name.decode("utf-8", "replace")
            if ask:
                return name.endswith(".weight") and name != "output.weight"
            src1 = _GgmlTensor.from_address(t.src[1])
            if src1.type != 0:  # activations must be F32
                return True
            n_col, n_tok = int(src1.ne[0]), int(src1.ne[1] * src1.ne[2] * src1.ne[3])
            buf = np.empty((n_tok, n_col), dtype=np.float32)
            contiguous = src1.nb[0] == 4 and src1.nb[1] == 4 * n_col
            if contiguous:
                g.ggml_backend_tensor_get(t.src[1], buf.ctypes.data, 0, buf.nbytes)
                im.add(name, buf)
            elif src1.data:
                raw = np.ctypeslib.as_array(
                    ctypes.cast(src1.data, ctypes.POINTER(ctypes.c_uint8)), shape=(int(src1.nb[1]) * int(src1.ne[1]),)
                )
                rows = np.lib.stride_tricks.as_strided(
                    raw.view(np.float32), shape=(int(src1.ne[1]), n_col), strides=(int(src1.nb[1]), int(src1.nb[0]))
                )
                im.add(name, np.array(rows))
            return True
        except BaseException as exc:  # never let an exception cross into C
            errors.append(exc)
            return True

    cb = L.ggml_backend_sched_eval_callback(on_eval) if hasattr(L, "ggml_backend_sched_eval_callback") else (
        ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)(on_eval)
    )
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = L.llama_model_load_from_file(str(gguf_path).encode(), mparams)
    if not model:
        raise NibbleError(f"llama.cpp could not load {gguf_path} to compute the importance matrix")
    try:
        vocab = L.llama_model_get_vocab(model)
        raw = text.encode("utf-8")
        n_max = len(raw) + 16
        toks = (L.llama_token * n_max)()
        n = L.llama_tokenize(vocab, raw, len(raw), toks, n_max, True, False)
        if n < 0:
            raise NibbleError("calibration text could not be tokenized")
        tokens = list(toks[:n])
        n_chunks = len(tokens) // ctx
        if max_chunks:
            n_chunks = min(n_chunks, max_chunks)
        if n_chunks < 1:
            raise NibbleError(
                f"calibration text is too short: {len(tokens)} tokens, need at least {ctx} (one window); use a longer file",
                setting="calibration text")
        cparams = L.llama_context_default_params()
        cparams.n_ctx = ctx
        cparams.n_batch = ctx
        cparams.n_ubatch = ctx
        nt = threads or os.cpu_count() or 1
        cparams.n_threads = nt
        cparams.n_threads_batch = nt
        cparams.cb_eval = cb
        cparams.cb_eval_user_data = None
        lctx = L.llama_init_from_model(model, cparams)
        if not lctx:
            raise NibbleError("llama.cpp could not create a context to compute the importance matrix")
        try:
            add_bos = L.llama_vocab_get_add_bos(vocab)
            bos = L.llama_vocab_bos(vocab)
            for c in range(n_chunks):
                reporter.check_cancel()
                chunk = tokens[c * ctx : (c + 1) * ctx]
                if add_bos and bos >= 0:
                    chunk[0] = bos
                L.llama_memory_clear(L.llama_get_memory(lctx), True)
                arr = (L.llama_token * len(chunk))(*chunk)
                rc = L.llama_decode(lctx, L.llama_batch_get_one(arr, len(chunk)))
                if rc != 0:
                    raise NibbleError(f"llama.cpp failed evaluating calibration window {c + 1} (code {rc})")
                if errors:
                    raise errors[0]
                im.chunk_count = c + 1
                reporter.progress(c + 1, n_chunks, f"importance matrix: window {c + 1}/{n_chunks}", stage="imatrix")
        finally:
            L.llama_free(lctx)
    finally:
        L.llama_model_free(model)
    return im
