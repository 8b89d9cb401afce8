"""Original Hugging Face models and AWQ checkpoints through transformers / torch, on cpu, cuda or mps."""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np

from engine.core.errors import NibbleError
from engine.models.resolve import ORIGINAL
from engine.runtime.base import Runtime, _reusable_prefix, check_fits

_GiB = 1024**3

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
# Hugging Face (and AWQ) through transformers / torch


def _torch_device(device: str) -> str:
    import torch

    if device in ("", "cpu"):
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NibbleError("device cuda was asked for but this PyTorch has no CUDA GPU; use the CPU",
                              setting="device")
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NibbleError("device mps was asked for but Apple Metal is not available; use the CPU", setting="device")
        return "mps"
    raise NibbleError(f"unknown device {device!r}; use cpu, cuda or mps", setting="device")


class TorchRuntime(Runtime):
    """A causal LM in torch with a Hugging Face tokenizer (the original model, or an AWQ checkpoint)."""

    kind = ORIGINAL

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

    def stream_decoder(self):
        """The tokenizer's own incremental decoder where it has one (it holds a token that ends in the middle
        of a character until the character is complete); else whole-sequence decoding."""
        backend = getattr(self.tok, "_tokenizer", None)
        try:
            from tokenizers.decoders import DecodeStream
        except ImportError:
            backend = None
        if backend is None:
            return super().stream_decoder()
        return _HFStream(backend, DecodeStream(skip_special_tokens=True))

    def memory_bytes(self) -> tuple[int, int, int]:
        """The parameters and buffers torch holds, and the keys and values cached for the last sequence."""
        if self.model is None:
            return 0, 0, 0
        tensors = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}  # tied weights once
        weights = sum(t.numel() * t.element_size() for t in tensors.values())
        kv = 0
        for layer in getattr(self._cache, "layers", None) or ():
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if t is not None and hasattr(t, "numel"):
                    kv += t.numel() * t.element_size()
        return int(weights), int(kv), len(self._cached) if self._cache is not None else 0

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


class _HFStream:
    """The tokenizers library's DecodeStream, and at the end whatever it still held (a last token that
    ends in the middle of a character), as the whole sequence decodes it."""

    def __init__(self, backend, stream):
        self._backend, self._stream = backend, stream
        self._ids: list[int] = []
        self._text = ""

    def step(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        piece = self._stream.step(self._backend, int(token_id)) or ""
        self._text += piece
        return piece

    def flush(self) -> str:
        full = self._backend.decode(self._ids, skip_special_tokens=True) if self._ids else ""
        return full[len(self._text):] if full.startswith(self._text) else ""


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



