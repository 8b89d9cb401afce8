"""Rendering a conversation through the model's own chat template.

Templates are Jinja run in a sandbox that cannot touch Python internals or change its inputs (as Hugging Face
renders them), with the same helpers HF provides (``raise_exception``, ``strftime_now``, a ``tojson`` that
keeps non-ASCII text). A model without a template gets a plain "Role: text" layout.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from engine.core.errors import NibbleError

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
