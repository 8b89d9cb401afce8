"""GGUF files through llama-cpp-python (CPU, or CUDA / Metal where the installed build has them)."""

from __future__ import annotations

import ctypes
import pathlib
from typing import Sequence

import numpy as np

from engine.core.errors import NibbleError
from engine.runtime.base import ByteStream, Runtime, _reusable_prefix, check_fits

GGUF_MAGIC = b"GGUF"
_GiB = 1024**3

# ----------------------------------------------------------------------------------------------------
# checks before loading


def check_gguf(path: pathlib.Path) -> int:
    """Refuse, in one line, a file that is not a GGUF or is cut short; returns its training context (0: unknown).

    Reads only the header's scalars and the tensors' extents: gguf-py's full reader spends tens of
    milliseconds to seconds of pure Python on the vocabulary, holding the interpreter while the app's UI
    thread waits (Chat loads models in a worker thread)."""
    from engine.models.gguf_header import read_gguf_header

    header = read_gguf_header(path)
    size = path.stat().st_size
    if header.data_end > size:
        raise NibbleError(f"{path} is truncated: its tensors need {header.data_end:,} bytes but the file has "
                          f"{size:,}; download or convert it again")
    arch = header.get("general.architecture", "")
    context = header.get(f"{arch}.context_length", 0)
    return int(context) if isinstance(context, int) else 0


def read_whole_gguf(path: pathlib.Path):
    """A gguf.GGUFReader over ``path``, refusing files that are not GGUFs or whose tensor data is cut short."""
    from engine.models.inspect import open_gguf

    size = path.stat().st_size
    reader = open_gguf(path)
    try:
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:
        raise NibbleError(f"{path} is truncated or corrupt ({type(exc).__name__}); download or convert it again") from None
    if end > size:
        raise NibbleError(f"{path} is truncated: its tensors need {end:,} bytes but the file has {size:,}; "
                          "download or convert it again")
    return reader



def kv_cache_ggml_type(kv_type: str) -> int:
    """llama.cpp's number for a KV cache type name (f16, q8_0, q4_0, ...), refusing unknown names in one line."""
    from engine.estimate.memory import KV_TYPES

    if kv_type not in KV_TYPES:
        raise NibbleError(f"KV cache type {kv_type!r} is unknown; choose one of {', '.join(KV_TYPES)}",
                          setting="KV cache type")
    return int(KV_TYPES[kv_type])


# ----------------------------------------------------------------------------------------------------
# GGUF through llama-cpp-python


class GGUFRuntime(Runtime):
    kind = "gguf"

    def __init__(self, path: pathlib.Path, *, device: str = "cpu", gpu_layers: int | None = None,
                 n_ctx: int = 2048, threads: int | None = None, n_batch: int = 512, kv_type: str = "f16"):
        super().__init__()
        kv_ggml = kv_cache_ggml_type(kv_type)
        try:
            import llama_cpp
        except ImportError:
            raise NibbleError("llama-cpp-python is not installed; run the set-up command from README.md") from None
        self._ll = llama_cpp
        self.path = path
        n_ctx_train = check_gguf(path)
        if n_ctx_train:
            n_ctx = min(n_ctx, n_ctx_train)
        gpu_asked = device not in ("cpu", "") or bool(gpu_layers)
        if gpu_layers is None:
            gpu_layers = -1 if gpu_asked else 0
        if gpu_asked and not llama_cpp.llama_supports_gpu_offload():
            self.notices.append("a GPU was asked for but this llama-cpp-python build has no GPU support "
                                "(no CUDA or Metal); running on the CPU")
            gpu_layers = 0
        self.device = "cpu" if gpu_layers == 0 else device if device not in ("cpu", "") else "gpu"
        if gpu_layers == 0:
            check_fits(path, int(path.stat().st_size * 1.05) + 256 * 1024**2, "cpu")
        n_batch = min(n_batch, n_ctx)
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_gpu_layers=gpu_layers,
                n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
                flash_attn=True,  # what llama.cpp's own tools pick on CPU ("auto"), so figures match theirs
                type_k=kv_ggml, type_v=kv_ggml,  # a quantized V cache needs flash attention, on above
            )
        except (ValueError, RuntimeError) as exc:
            raise NibbleError(f"llama.cpp could not load {path} ({exc}); the file may be damaged, or its "
                              "architecture is newer than this llama.cpp") from None
        self.threads = self.llm.n_threads
        self.kv_type = kv_type
        self._ctx = self.llm.ctx
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.n_ctx = self.llm.n_ctx()
        self.n_batch = n_batch
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        self.bos_id = bos if bos >= 0 else None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)) and self.bos_id is not None
        self.eos_ids = frozenset(i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i))
        self.chat_template = self.llm.metadata.get("tokenizer.chat_template")
        self.bos_token = (self.token_text(self.bos_id) or "") if self.bos_id is not None else ""
        eos = llama_cpp.llama_vocab_eos(self._vocab)
        self.eos_token = (self.token_text(eos) or "") if eos >= 0 else ""
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._cached: list[int] = []

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        if add_bos is None:
            add_bos = self.add_bos
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes llama.cpp's own tools print for a generated token (special tokens print nothing)."""
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, int(token_id), buf, len(buf), 0, False)
        if n < 0:  # a longer piece: llama.cpp says how long
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, int(token_id), buf, len(buf), 0, False)
        return buf.raw[:max(n, 0)]

    def stream_decoder(self):
        return ByteStream(self.token_bytes)

    def memory_bytes(self) -> tuple[int, int, int]:
        """The model's tensors as llama.cpp holds them, and the KV cache it allocated for the context
        (keys and values of every layer for ``n_ctx`` positions, in f16 as llama.cpp keeps them by default)."""
        ll, model = self._ll, self.llm.model
        meta = self.llm.metadata
        arch = meta.get("general.architecture", "")
        n_head = max(1, ll.llama_model_n_head(model))
        head = ll.llama_model_n_embd(model) // n_head
        k_len = int(meta.get(f"{arch}.attention.key_length") or head)
        v_len = int(meta.get(f"{arch}.attention.value_length") or head)
        kv = self.n_ctx * ll.llama_model_n_layer(model) * ll.llama_model_n_head_kv(model) * (k_len + v_len) * 2
        return int(ll.llama_model_size(model)), int(kv), int(self.n_ctx)

    def token_text(self, token_id: int) -> str | None:
        if token_id is None or not 0 <= token_id < self.n_vocab:
            return None
        raw = self._ll.llama_vocab_get_text(self._vocab, token_id)
        return raw.decode("utf-8", errors="replace") if raw is not None else None

    def _decode(self, ids: Sequence[int], pos0: int, out_from: int) -> np.ndarray:
        """Decode ``ids`` at positions ``pos0..``; logits rows for the positions ``>= out_from``.

        Kept lean: during generation it runs once a token, and its Python time counts against tokens/s."""
        out = []
        b = self._batch
        token, pos_arr, n_seq, seq, want = b.token, b.pos, b.n_seq_id, b.seq_id, b.logits
        for s in range(0, len(ids), self.n_batch):
            chunk = ids[s:s + self.n_batch]
            base = pos0 + s
            for k, tok in enumerate(chunk):
                token[k] = tok
                pos_arr[k] = base + k
                n_seq[k] = 1
                seq[k][0] = 0
                want[k] = base + k >= out_from
            b.n_tokens = len(chunk)
            rc = self._ll.llama_decode(self._ctx, b)
            if rc != 0:
                self._cached = []
                self._ll.llama_memory_clear(self._mem, True)
                raise NibbleError(f"llama.cpp could not run {self.name} on {len(ids)} tokens (code {rc}); "
                                  "use a shorter context length", setting="context length")
            self._cached.extend(chunk)
            n_out = min(len(chunk), max(0, base + len(chunk) - max(out_from, base)))
            if n_out:
                rows = np.empty((n_out, self.n_vocab), np.float32)
                ctypes.memmove(rows.ctypes.data, self._ll.llama_get_logits(self._ctx), rows.nbytes)
                out.append(rows)
        if not out:
            return np.zeros((0, self.n_vocab), np.float32)
        return np.concatenate(out) if len(out) > 1 else out[0]

    def logits(self, ids: Sequence[int], start: int = 0) -> np.ndarray:
        if len(ids) > self.n_ctx:
            raise NibbleError(f"{len(ids)} tokens do not fit the context of {self.n_ctx} {self.name} was opened with")
        self._ll.llama_memory_clear(self._mem, True)
        self._cached = []
        return self._decode([int(t) for t in ids], 0, start)

    def _prefill(self, ids: Sequence[int]) -> np.ndarray:
        ids = list(ids)
        common = _reusable_prefix(self._cached, ids)
        if not self._ll.llama_memory_seq_rm(self._mem, -1, common, -1):
            self._ll.llama_memory_clear(self._mem, True)
            common = 0
        self._cached = self._cached[:common]
        return self._decode([int(t) for t in ids[common:]], common, len(ids) - 1)[0]

    def _step(self, token_id: int) -> np.ndarray:
        pos = len(self._cached)
        return self._decode([int(token_id)], pos, pos)[0]

    def reset(self) -> None:
        self._ll.llama_memory_clear(self._mem, True)
        self._cached = []

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None


# ----------------------------------------------------------------------------------------------------
