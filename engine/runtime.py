"""One interface over the three ways Nibble runs a model: GGUF, the original Hugging Face model, AWQ.

``open_runtime(path, ...)`` looks at what ``path`` is and returns a :class:`Runtime`:

- a ``.gguf`` file runs through llama-cpp-python (CPU, or CUDA / Metal where the installed build has them);
- a Hugging Face folder runs through transformers on cpu / cuda / mps, in float32 unless told otherwise;
- a folder whose ``config.json`` says ``quantization_config.quant_method == "awq"`` runs through
  Nibble's own AWQ loader (``engine.awq.load_awq``).

Every runtime can tokenize, return logits for a token sequence, and stream a generation with stop strings
and cancel. Evaluation, chat, compare and bench are written once against this interface.
"""

from __future__ import annotations

import ctypes
import json
import os
import pathlib
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from engine.errors import NibbleError

GGUF_MAGIC = b"GGUF"
_GiB = 1024**3


# ----------------------------------------------------------------------------------------------------
# sampling


def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when ``temperature <= 0``; otherwise temperature plus nucleus (top-p) sampling."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if 0 < top_p < 1:
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p) + 1)]
        q = p[keep] / p[keep].sum()
        return int(keep[rng.choice(len(keep), p=q)])
    return int(rng.choice(len(p), p=p))


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if callable(cancel):
        return bool(cancel())
    return bool(cancel)


@dataclass
class GenerationResult:
    """What a finished (or stopped) generation produced."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = ""  # "eos", "stop", "length", "context", "cancelled"
    prompt_tokens: int = 0


# ----------------------------------------------------------------------------------------------------
# the interface


class Runtime(ABC):
    """A loaded model. Subclasses fill the attributes and the four primitives at the bottom."""

    kind: str = ""  # "gguf", "hf" or "awq"
    path: pathlib.Path
    device: str = "cpu"
    n_vocab: int = 0
    n_ctx: int = 0  # the longest sequence this runtime will take
    bos_id: int | None = None
    eos_ids: frozenset[int] = frozenset()
    add_bos: bool = True  # whether the tokenizer puts BOS in front of a text
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    def __init__(self) -> None:
        self.notices: list[str] = []  # things the user should be told (e.g. GPU asked for, none present)
        self.last_generation = GenerationResult()

    @property
    def name(self) -> str:
        return self.path.name

    # ---- tokens

    @abstractmethod
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of ``text``; BOS in front when ``add_bos`` (default: what the tokenizer does)."""

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are left out."""

    @abstractmethod
    def token_text(self, token_id: int) -> str | None:
        """The raw vocabulary entry of one id (for comparing vocabularies), None where there is none."""

    # ---- model

    @abstractmethod
    def logits(self, ids: Sequence[int], start: int = 0) -> np.ndarray:
        """float32 logits ``[len(ids) - start, n_vocab]`` for positions ``start..len(ids)-1`` of a fresh sequence."""

    @abstractmethod
    def _prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cached sequence equal ``ids`` (reusing a common prefix); logits of its last position."""

    @abstractmethod
    def _step(self, token_id: int) -> np.ndarray:
        """Append one token to the cached sequence; logits of the new position."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the cached sequence (the next generation starts from an empty context)."""

    def close(self) -> None:
        """Release the model's memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- chat

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        from engine.chat import render_chat_template

        return render_chat_template(self.chat_template, messages, bos_token=self.bos_token,
                                    eos_token=self.eos_token, add_generation_prompt=add_generation_prompt)

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """The rendered conversation as token ids, with one BOS in front when the model wants one."""
        ids = self.tokenize(self.render_chat(messages), add_bos=False, special=True)
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    # ---- timing (bench), done where the model runs: no pipe between the clock and the model

    def time_prompt(self, ids: Sequence[int]) -> float:
        """Seconds to decode ``ids`` in one pass from an empty context, logits of the last position only."""
        import time

        self.reset()
        t0 = time.perf_counter()
        self._prefill(ids)
        return time.perf_counter() - t0

    def time_generation(self, ids: Sequence[int]) -> float:
        """Seconds to decode ``ids`` one token at a time from an empty context, each with its logits."""
        import time

        self.reset()
        t0 = time.perf_counter()
        self._prefill(ids[:1])
        for tok in ids[1:]:
            self._step(tok)
        return time.perf_counter() - t0

    # ---- generation

    def generate_tokens(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Iterable[str] = (),
        cancel=None,
        seed: int | None = None,
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(token_id, text_piece)`` as tokens are produced; stops on EOS, a stop string, the token
        budget, the context size, or ``cancel`` (a callable or a flag object). Text that might be the start
        of a stop string, or half a UTF-8 character, is held back until it is known. The outcome is left in
        ``self.last_generation``."""
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise NibbleError("the prompt is empty; type something first")
        if len(prompt_ids) >= self.n_ctx:
            raise NibbleError(f"the prompt is {len(prompt_ids)} tokens but {self.name} was opened with a "
                              f"context of {self.n_ctx}; start a new conversation or raise --ctx")
        stops = [s for s in stop if s]
        rng = np.random.default_rng(seed)
        result = GenerationResult(prompt_tokens=len(prompt_ids))
        self.last_generation = result
        emitted = 0
        pending_token = -1
        logits = self._prefill(prompt_ids)
        try:
            for _ in range(max_tokens):
                if _cancelled(cancel):
                    result.finish_reason = "cancelled"
                    break
                tok = sample_token(logits, temperature, top_p, rng)
                if tok in self.eos_ids:
                    result.finish_reason = "eos"
                    break
                result.token_ids.append(tok)
                full = self.detokenize(result.token_ids)
                hit = min((i for i in (full.find(s, max(0, emitted - len(s))) for s in stops) if i >= 0),
                          default=-1)
                if hit >= 0:
                    result.text = full[:hit]
                    if hit > emitted:
                        yield tok, full[emitted:hit]
                    result.finish_reason = "stop"
                    return
                safe = len(full)
                while safe > emitted and full[safe - 1] == "\ufffd":
                    safe -= 1
                for s in stops:  # hold back a tail that could grow into a stop string
                    for k in range(min(len(s) - 1, safe - emitted), 0, -1):
                        if full[safe - k:safe] == s[:k]:
                            safe -= k
                            break
                result.text = full
                pending_token = tok
                if safe > emitted:
                    yield tok, full[emitted:safe]
                    emitted = safe
                    pending_token = -1
                if len(prompt_ids) + len(result.token_ids) >= self.n_ctx:
                    result.finish_reason = "context"
                    break
                logits = self._step(tok)
            else:
                result.finish_reason = "length"
            full = self.detokenize(result.token_ids)
            result.text = full
            if len(full) > emitted:
                yield pending_token, full[emitted:]
        except KeyboardInterrupt:
            result.finish_reason = "cancelled"
            result.text = self.detokenize(result.token_ids)
            raise

    def generate(self, prompt_ids: Sequence[int], *, max_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, stop: Iterable[str] = (), on_token: Callable[[str], None] | None = None,
                 cancel=None, seed: int | None = None) -> Iterator[str]:
        """Stream text pieces (see :meth:`generate_tokens`); ``on_token`` is also called with each piece."""
        for _, piece in self.generate_tokens(prompt_ids, max_tokens=max_tokens, temperature=temperature,
                                             top_p=top_p, stop=stop, cancel=cancel, seed=seed):
            if on_token is not None:
                on_token(piece)
            yield piece


# ----------------------------------------------------------------------------------------------------
# checks before loading


def check_gguf(path: pathlib.Path) -> int:
    """Refuse, in one line, a file that is not a GGUF or is cut short; returns its training context (0: unknown)."""
    from engine.inspect import gguf_field

    reader = read_whole_gguf(path)
    arch = gguf_field(reader, "general.architecture", "")
    return int(gguf_field(reader, f"{arch}.context_length", 0) or 0)


def read_whole_gguf(path: pathlib.Path):
    """A gguf.GGUFReader over ``path``, refusing files that are not GGUFs or whose tensor data is cut short."""
    from engine.inspect import open_gguf

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


def _reusable_prefix(cached: Sequence[int], ids: Sequence[int]) -> int:
    """How many leading tokens of ``ids`` the cache already holds; at least the last is always recomputed
    so its logits are fresh."""
    common = 0
    for a, b in zip(cached, ids):
        if a != b:
            break
        common += 1
    return min(common, len(ids) - 1)


def available_memory(device: str) -> int:
    """Bytes free for a model on ``device``."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(path: pathlib.Path, need: int, device: str) -> None:
    """Refuse before loading when the model will not fit in free memory."""
    if os.environ.get("NIBBLE_SKIP_MEMORY_CHECK"):
        return
    free = available_memory(device)
    if need > free:
        where = "GPU memory" if device.startswith("cuda") else "memory"
        raise NibbleError(f"{path.name} needs about {need / _GiB:.1f} GiB of {where} to run but only "
                          f"{free / _GiB:.1f} GiB is free; close other programs or use a smaller quantization")


def _hf_weight_bytes(folder: pathlib.Path, load_dtype_bytes: int | None) -> int:
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    total = sum(f.stat().st_size for f in files)
    if load_dtype_bytes is None:
        return total
    try:
        cfg = json.loads((folder / "config.json").read_text())
        src = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    except (OSError, ValueError):
        src = "float32"
    src_bytes = 2 if src in ("float16", "bfloat16") else 4
    return total * load_dtype_bytes // src_bytes


# ----------------------------------------------------------------------------------------------------
# GGUF through llama-cpp-python


class GGUFRuntime(Runtime):
    kind = "gguf"

    def __init__(self, path: pathlib.Path, *, device: str = "cpu", gpu_layers: int | None = None,
                 n_ctx: int = 2048, threads: int | None = None, n_batch: int = 512):
        super().__init__()
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
            )
        except (ValueError, RuntimeError) as exc:
            raise NibbleError(f"llama.cpp could not load {path} ({exc}); the file may be damaged, or its "
                              "architecture is newer than this llama.cpp") from None
        self.threads = self.llm.n_threads
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
                                  "use a smaller --ctx")
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
# Hugging Face (and AWQ) through transformers / torch


def _torch_device(device: str) -> str:
    import torch

    if device in ("", "cpu"):
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NibbleError("--device cuda was asked for but this PyTorch has no CUDA GPU; use --device cpu")
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NibbleError("--device mps was asked for but Apple Metal is not available; use --device cpu")
        return "mps"
    raise NibbleError(f"unknown device {device!r}; use cpu, cuda or mps")


class TorchRuntime(Runtime):
    """A causal LM in torch with a Hugging Face tokenizer (the original model, or an AWQ checkpoint)."""

    kind = "hf"

    def __init__(self, path: pathlib.Path, model, tokenizer, *, device: str, n_ctx: int):
        super().__init__()
        import torch

        self._torch = torch
        self.path = path
        self.model = model
        self.tok = tokenizer
        self.device = device
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        out_emb = model.get_output_embeddings()
        self.n_vocab = int(out_emb.weight.shape[0]) if out_emb is not None else int(cfg.vocab_size)
        max_pos = getattr(cfg, "max_position_embeddings", None) or n_ctx
        self.n_ctx = int(min(n_ctx, max_pos))
        self.bos_id = tokenizer.bos_token_id
        with_special = tokenizer("a", add_special_tokens=True).input_ids
        plain = tokenizer("a", add_special_tokens=False).input_ids
        self.add_bos = self.bos_id is not None and len(with_special) > len(plain) and with_special[0] == self.bos_id
        eos: set[int] = set()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for e in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]) + [tokenizer.eos_token_id]:
            if e is not None:
                eos.add(int(e))
        self.eos_ids = frozenset(eos)
        self.chat_template = getattr(tokenizer, "chat_template", None)
        if isinstance(self.chat_template, dict):
            self.chat_template = self.chat_template.get("default")
        self.bos_token = tokenizer.bos_token or ""
        self.eos_token = tokenizer.eos_token or ""
        self._cache = None
        self._cached: list[int] = []

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        if add_bos is None:
            add_bos = self.add_bos
        # special=False reads "<|im_start|>" in a text as plain characters, as llama.cpp does
        ids = list(self.tok(text, add_special_tokens=False, split_special_tokens=not special).input_ids)
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token_id: int) -> str | None:
        if token_id is None or not 0 <= token_id < len(self.tok):
            return None
        return self.tok.convert_ids_to_tokens(int(token_id))

    def _forward(self, ids: Sequence[int], keep: int, cache=None):
        t = self._torch
        x = t.tensor([list(ids)], dtype=t.long, device=self.device)
        with t.inference_mode():
            out = self.model(input_ids=x, past_key_values=cache, use_cache=cache is not None, logits_to_keep=keep)
        return out

    def logits(self, ids: Sequence[int], start: int = 0) -> np.ndarray:
        if len(ids) > self.n_ctx:
            raise NibbleError(f"{len(ids)} tokens do not fit the context of {self.n_ctx} {self.name} was opened with")
        keep = len(ids) - start
        out = self._forward(ids, keep)
        return out.logits[0, -keep:].float().cpu().numpy()

    def _prefill(self, ids: Sequence[int]) -> np.ndarray:
        from transformers import DynamicCache

        ids = list(ids)
        common = _reusable_prefix(self._cached, ids)
        if self._cache is None or common == 0:
            self._cache = DynamicCache(config=self.model.config)
            common = 0
        else:
            extra = self._cache.get_seq_length() - common
            if extra > 0:
                self._cache.crop(-extra)
        self._cached = ids[:common]
        out = self._forward(ids[common:], 1, self._cache)
        self._cached = ids
        return out.logits[0, -1].float().cpu().numpy()

    def _step(self, token_id: int) -> np.ndarray:
        out = self._forward([token_id], 1, self._cache)
        self._cached.append(int(token_id))
        return out.logits[0, -1].float().cpu().numpy()

    def reset(self) -> None:
        self._cache = None
        self._cached = []

    def close(self) -> None:
        self.model = None
        self._cache = None


def _load_tokenizer(folder: pathlib.Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as exc:
        raise NibbleError(f"could not read the tokenizer in {folder} ({type(exc).__name__}); the folder needs "
                          "tokenizer.json or tokenizer.model") from None


def open_hf(folder: pathlib.Path, *, device: str = "cpu", n_ctx: int = 2048, dtype: str = "float32") -> TorchRuntime:
    import torch
    from transformers import AutoModelForCausalLM

    dev = _torch_device(device)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    need = _hf_weight_bytes(folder, torch_dtype.itemsize) * 11 // 10 + 256 * 1024**2
    check_fits(folder, need, dev)
    tok = _load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype, trust_remote_code=False,
                                                     local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise NibbleError(f"transformers could not load {folder} ({type(exc).__name__}: {str(exc)[:200]}); "
                          "check that it is a complete Hugging Face model folder") from None
    model.to(dev).eval()
    return TorchRuntime(folder, model, tok, device=dev, n_ctx=n_ctx)


def open_awq(folder: pathlib.Path, *, device: str = "cpu", n_ctx: int = 2048) -> TorchRuntime:
    try:
        from engine.awq import load_awq
    except ImportError:
        raise NibbleError(f"{folder} is an AWQ checkpoint, and this Nibble has no AWQ loader yet; "
                          "open the original model or a GGUF instead") from None
    dev = _torch_device(device)
    check_fits(folder, _hf_weight_bytes(folder, None) * 13 // 10 + 256 * 1024**2, dev)
    loaded = load_awq(folder, dev)
    model, tok = loaded if isinstance(loaded, tuple) else (loaded, _load_tokenizer(folder))
    model.eval()
    rt = TorchRuntime(folder, model, tok, device=dev, n_ctx=n_ctx)
    rt.kind = "awq"
    return rt


def model_kind(path: pathlib.Path) -> str:
    """'gguf', 'hf' or 'awq' for an existing path, or a NibbleError saying why it is none of them."""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head == GGUF_MAGIC:
            return "gguf"
        raise NibbleError(f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf file or a "
                          "Hugging Face model folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise NibbleError(f"{path} is a folder without config.json; pass a Hugging Face model folder or a .gguf file")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError:
        raise NibbleError(f"{cfg_path} is not valid JSON") from None
    qc = cfg.get("quantization_config") or {}
    method = str(qc.get("quant_method", "")).lower()
    if method == "awq":
        return "awq"
    if method:
        raise NibbleError(f"{path} is quantized with {method!r}, which Nibble does not run; use the original "
                          "model, a GGUF or an AWQ checkpoint")
    return "hf"


def open_runtime(path, *, device: str = "cpu", gpu_layers: int | None = None, n_ctx: int = 2048,
                 threads: int | None = None, dtype: str = "float32", share_with_torch: bool = False) -> Runtime:
    """Open a GGUF file, a Hugging Face folder or an AWQ folder as a :class:`Runtime`.

    ``device``: "cpu", "cuda" (or "cuda:N"), "mps", or "metal"/"gpu" for GGUF. ``gpu_layers`` applies to GGUF
    (None: all layers when a GPU device is named, none otherwise). ``n_ctx``: the longest sequence.
    ``share_with_torch``: this process also runs models through torch, so a GGUF on a GPU build of
    llama.cpp runs in a child process (see ``engine.llama_first``).
    """
    from engine.source import resolve_model_path

    path = resolve_model_path(path)
    kind = model_kind(path)
    if kind == "gguf":
        from engine.llama_first import needs_own_process

        options = dict(device=device, gpu_layers=gpu_layers, n_ctx=n_ctx, threads=threads)
        if needs_own_process(share_with_torch):
            from engine.gguf_process import GGUFProcessRuntime

            return GGUFProcessRuntime(path, **options)
        return GGUFRuntime(path, **options)
    if device in ("metal", "gpu"):
        device = "mps" if sys.platform == "darwin" else "cuda"
    if kind == "awq":
        return open_awq(path, device=device, n_ctx=n_ctx)
    return open_hf(path, device=device, n_ctx=n_ctx, dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# pairing two models token by token


def uses_torch(path) -> bool:
    """Whether opening ``path`` runs torch (an original Hugging Face model or an AWQ checkpoint)."""
    from engine.source import resolve_model_path

    try:
        return model_kind(resolve_model_path(path)) != "gguf"
    except NibbleError:
        return False


def check_same_vocab(a: Runtime, b: Runtime, samples: int = 512) -> None:
    """Refuse a pair whose vocabularies differ: their logits cannot be compared token by token."""
    if a.n_vocab != b.n_vocab:
        raise NibbleError(f"{a.name} and {b.name} have different vocabularies ({a.n_vocab:,} vs {b.n_vocab:,} "
                          "tokens); both models must share one tokenizer to be compared")
    n = a.n_vocab
    ids = sorted(set(np.linspace(0, n - 1, num=min(samples, n), dtype=np.int64).tolist()))
    checked = differ = 0
    for i in ids:
        ta, tb = a.token_text(i), b.token_text(i)
        if ta is None or tb is None:
            continue
        checked += 1
        differ += ta != tb
    if checked and differ > max(2, checked // 100):
        raise NibbleError(f"{a.name} and {b.name} have different vocabularies ({differ} of {checked} sampled "
                          "tokens differ); both models must share one tokenizer to be compared")

