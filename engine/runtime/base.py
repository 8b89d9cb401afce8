"""The one interface every way of running a model offers (tokenize, logits, streamed generation with
stop strings and cancel), and what is shared by all of them: sampling, prompt-cache reuse, pairing two
models token by token. Evaluation, chat, compare and bench are written once against it."""

from __future__ import annotations

import codecs
import os
import pathlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from engine.core.devices import free_memory
from engine.core.errors import NibbleError

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
# turning generated tokens into text, piece by piece


class ByteStream:
    """Text of generated tokens from each token's bytes, through an incremental UTF-8 decoder: a token that
    ends in the middle of a character gives "" and the token that completes it gives the whole character, so
    the pieces joined are exactly the bytes joined and decoded."""

    def __init__(self, token_bytes: Callable[[int], bytes]):
        self._bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def step(self, token_id: int) -> str:
        return self._utf8.decode(self._bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class TextStream:
    """Text of generated tokens for a runtime that only decodes whole sequences: the sequence is decoded
    again at each token and what it added is given, a trailing half character (U+FFFD) held back."""

    def __init__(self, detokenize: Callable[[Sequence[int]], str]):
        self._detokenize = detokenize
        self._ids: list[int] = []
        self._done = ""

    def _take(self, final: bool) -> str:
        full = self._detokenize(self._ids)
        safe = len(full)
        while not final and safe > len(self._done) and full[safe - 1] == "\ufffd":
            safe -= 1
        piece, self._done = full[len(self._done):safe], full[:safe]
        return piece

    def step(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        return self._take(final=False)

    def flush(self) -> str:
        return self._take(final=True) if self._ids else ""


# ----------------------------------------------------------------------------------------------------
# the interface


class Runtime(ABC):
    """A loaded model. Subclasses fill the attributes and the four primitives at the bottom."""

    kind: str = ""  # engine.models.resolve.MODEL_KINDS: "original", "gguf" or "awq"
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

    def stream_decoder(self):
        """A fresh decoder of generated tokens into text pieces (``step(id) -> str``, ``flush() -> str``)."""
        return TextStream(self.detokenize)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """The text each of ``ids`` adds when they are generated in this order (a token that ends in the
        middle of a character adds "", the one that completes it the whole character)."""
        dec = self.stream_decoder()
        pieces = [dec.step(int(i)) for i in ids]
        if pieces:
            pieces[-1] += dec.flush()
        return pieces

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

    def memory_bytes(self) -> tuple[int, int, int]:
        """What the loaded model holds: weights and KV cache in bytes, and the positions that cache holds room
        for; zeros where unknown."""
        return 0, 0, 0

    def close(self) -> None:
        """Release the model's memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- chat

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        from engine.runtime.templates import render_chat_template

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
                              f"context of {self.n_ctx}; start a new conversation or raise the context length",
                              setting="context length")
        stops = [s for s in stop if s]
        rng = np.random.default_rng(seed)
        result = GenerationResult(prompt_tokens=len(prompt_ids))
        self.last_generation = result
        emitted = 0
        pending_token = -1
        decoder = self.stream_decoder()
        text = ""
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
                text += decoder.step(tok)
                hit = min((i for i in (text.find(s, max(0, emitted - len(s))) for s in stops) if i >= 0),
                          default=-1)
                if hit >= 0:
                    result.text = text[:hit]
                    if hit > emitted:
                        yield tok, text[emitted:hit]
                    result.finish_reason = "stop"
                    return
                safe = len(text)
                for s in stops:  # hold back a tail that could grow into a stop string
                    for k in range(min(len(s) - 1, safe - emitted), 0, -1):
                        if text[safe - k:safe] == s[:k]:
                            safe -= k
                            break
                result.text = text
                pending_token = tok
                if safe > emitted:
                    yield tok, text[emitted:safe]
                    emitted = safe
                    pending_token = -1
                if len(prompt_ids) + len(result.token_ids) >= self.n_ctx:
                    result.finish_reason = "context"
                    break
                logits = self._step(tok)
            else:
                result.finish_reason = "length"
            text += decoder.flush()
            result.text = text
            if len(text) > emitted:
                yield pending_token, text[emitted:]
        except KeyboardInterrupt:
            result.finish_reason = "cancelled"
            result.text = text
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


def _reusable_prefix(cached: Sequence[int], ids: Sequence[int]) -> int:
    """How many leading tokens of ``ids`` the cache already holds; at least the last is always recomputed
    so its logits are fresh."""
    common = 0
    for a, b in zip(cached, ids):
        if a != b:
            break
        common += 1
    return min(common, len(ids) - 1)



def check_fits(path: pathlib.Path, need: int, device: str) -> None:
    """Refuse before loading when the model will not fit in free memory."""
    if os.environ.get("NIBBLE_SKIP_MEMORY_CHECK"):
        return
    free = free_memory(device)
    if free is None:
        return
    if need > free:
        where = "GPU memory" if device.startswith("cuda") else "memory"
        raise NibbleError(f"{path.name} needs about {need / _GiB:.1f} GiB of {where} to run but only "
                          f"{free / _GiB:.1f} GiB is free; close other programs or use a smaller quantization")




# ----------------------------------------------------------------------------------------------------
# pairing two models token by token


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

