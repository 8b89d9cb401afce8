"""Chatting with a model: the conversation, its rendering through the model's own chat template, streaming.

Templates are Jinja run in a sandbox that cannot touch Python internals or change its inputs (as Hugging Face
renders them), with the same helpers HF provides (``raise_exception``, ``strftime_now``, a ``tojson`` that
keeps non-ASCII text). A model without a template gets a plain "Role: text" layout, and a notice says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Callable, Iterator

from engine.errors import NibbleError
from engine.runtime import Runtime

PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class _TemplateRefused(Exception):
    pass


def _raise_exception(message):
    raise _TemplateRefused(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat_template(template: str | None, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                         add_generation_prompt: bool = True) -> str:
    """The conversation as the model expects to read it."""
    from jinja2 import TemplateError

    try:
        compiled = _compile(template or PLAIN_TEMPLATE)
        return compiled.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt)
    except _TemplateRefused as exc:
        raise NibbleError(f"the model's chat template refused this conversation: {exc}") from None
    except TemplateError as exc:
        raise NibbleError(f"the model's chat template could not be rendered ({type(exc).__name__}: {exc})") from None


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
