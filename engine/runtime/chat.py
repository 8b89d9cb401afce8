"""Chatting with a model: the conversation, its settings and streaming (templates: :mod:`engine.runtime.templates`).

A model without a chat template gets a plain "Role: text" layout, and a notice says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from engine.core.errors import NibbleError
from engine.runtime.base import Runtime
from engine.runtime.templates import PLAIN_TEMPLATE, render_chat_template  # noqa: F401  (part of chat's API)


@dataclass
class ChatSettings:
    system_prompt: str | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class ReplyFigures:
    """What one reply cost: tokens, speed (after the first token) and how full the context is."""

    completion_tokens: int
    prompt_tokens: int
    tokens_per_second: float | None
    context_used: int
    context_size: int
    finish_reason: str
    seconds: float


@dataclass
class Conversation:
    """A conversation with one model: the history the user sees and the model is prompted with.

    ``ask`` adds the user's turn, ``reply`` streams the model's answer into the history (kept even when
    stopped early), ``retry`` takes the last answer back so that ``reply`` can give another. ``stream`` and
    ``send`` do a whole turn. The runtime may be swapped between turns; the history stays.
    """

    runtime: Runtime | None = None
    settings: ChatSettings = field(default_factory=ChatSettings)
    history: list[dict] = field(default_factory=list)  # user / assistant turns, without the system prompt
    last_finish: str = ""
    last_figures: ReplyFigures | None = None

    @property
    def notices(self) -> list[str]:
        if self.runtime is None or self.runtime.chat_template:
            return []
        return [f"{self.runtime.name} has no chat template; using a plain 'User: / Assistant:' layout"]

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.settings.system_prompt}] if self.settings.system_prompt else []
        return system + self.history

    def reset(self) -> None:
        self.history.clear()
        self.last_figures = None

    def ask(self, user_text: str) -> None:
        """Add the user's turn (the reply comes from :meth:`reply`)."""
        self.history.append({"role": "user", "content": user_text})

    def retry(self) -> bool:
        """Take back the answers after the last user turn; True when there is a user turn to answer again."""
        while self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        return bool(self.history)

    def reply(self, *, cancel=None) -> Iterator[str]:
        """Stream the model's answer to the history as it stands. When the consumer stops early, when
        ``cancel`` fires or on Ctrl-C, the partial answer still joins the history; on an error nothing does."""
        import time

        if self.runtime is None:
            raise NibbleError("no model is loaded; pick one first")
        rt = self.runtime
        ids = rt.chat_prompt_ids(self.messages())
        s = self.settings
        answer = {"role": "assistant", "content": ""}
        self.last_finish = "cancelled"
        started = time.perf_counter()
        first: float | None = None
        keep = True
        try:
            for piece in rt.generate(ids, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                     stop=s.stop, cancel=cancel, seed=s.seed):
                if first is None:
                    first = time.perf_counter()
                answer["content"] += piece
                yield piece
            self.last_finish = rt.last_generation.finish_reason
        except NibbleError:
            keep = False
            raise
        finally:
            if keep:
                res = rt.last_generation
                answer["content"] = res.text or answer["content"]
                self.history.append(answer)
                ended = time.perf_counter()
                n = len(res.token_ids)
                gen = ended - (first or started)
                self.last_figures = ReplyFigures(
                    completion_tokens=n, prompt_tokens=res.prompt_tokens,
                    tokens_per_second=(n - 1) / gen if n > 1 and gen > 0 else None,
                    context_used=res.prompt_tokens + n, context_size=rt.n_ctx,
                    finish_reason=self.last_finish, seconds=ended - started)

    def stream(self, user_text: str, *, cancel=None) -> Iterator[str]:
        """Add the user's turn and stream the reply; on an error the user's turn is taken back too."""
        self.ask(user_text)
        try:
            yield from self.reply(cancel=cancel)
        except NibbleError:
            self.history.pop()
            raise

    def send(self, user_text: str, *, on_token: Callable[[str], None] | None = None, cancel=None) -> str:
        """Like :meth:`stream`, returning the whole reply; Ctrl-C stops the reply, not the conversation."""
        try:
            for piece in self.stream(user_text, cancel=cancel):
                if on_token is not None:
                    on_token(piece)
        except KeyboardInterrupt:
            self.last_finish = "cancelled"
        return self.history[-1]["content"]
