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


@dataclass
class Conversation:
    """A conversation with one model. ``send`` streams the reply and keeps it, even when stopped early."""

    runtime: Runtime
    settings: ChatSettings = field(default_factory=ChatSettings)
    history: list[dict] = field(default_factory=list)  # user / assistant turns, without the system prompt
    last_finish: str = ""

    @property
    def notices(self) -> list[str]:
        if self.runtime.chat_template:
            return []
        return [f"{self.runtime.name} has no chat template; using a plain 'User: / Assistant:' layout"]

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.settings.system_prompt}] if self.settings.system_prompt else []
        return system + self.history

    def reset(self) -> None:
        self.history.clear()

    def stream(self, user_text: str, *, cancel=None) -> Iterator[str]:
        """Add the user's turn and stream the reply. When the consumer stops early, when ``cancel`` fires or
        on Ctrl-C, the partial reply still joins the history."""
        self.history.append({"role": "user", "content": user_text})
        try:
            ids = self.runtime.chat_prompt_ids(self.messages())
        except NibbleError:
            self.history.pop()
            raise
        s = self.settings
        reply = {"role": "assistant", "content": ""}
        self.last_finish = "cancelled"
        keep = True
        try:
            for piece in self.runtime.generate(ids, max_tokens=s.max_tokens, temperature=s.temperature,
                                               top_p=s.top_p, stop=s.stop, cancel=cancel, seed=s.seed):
                reply["content"] += piece
                yield piece
            self.last_finish = self.runtime.last_generation.finish_reason
        except NibbleError:
            keep = False
            self.history.pop()
            raise
        finally:
            if keep:
                reply["content"] = self.runtime.last_generation.text or reply["content"]
                self.history.append(reply)

    def send(self, user_text: str, *, on_token: Callable[[str], None] | None = None, cancel=None) -> str:
        """Like :meth:`stream`, returning the whole reply; Ctrl-C stops the reply, not the conversation."""
        try:
            for piece in self.stream(user_text, cancel=cancel):
                if on_token is not None:
                    on_token(piece)
        except KeyboardInterrupt:
            self.last_finish = "cancelled"
        return self.history[-1]["content"]
