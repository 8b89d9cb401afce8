"""Which engine functions this build has. A view asks here and shows "not available" when one is missing."""

from __future__ import annotations

import importlib
from typing import Any, Callable


class Missing(Exception):
    """An engine feature this build of Nibble does not have."""


def engine_function(module: str, name: str) -> Callable[..., Any] | None:
    """``engine.<module>.<name>`` if it can be imported, else None."""
    try:
        mod = importlib.import_module(f"engine.{module}")
    except ImportError:
        return None
    return getattr(mod, name, None)


def require(module: str, name: str) -> Callable[..., Any]:
    fn = engine_function(module, name)
    if fn is None:
        raise Missing(f"engine.{module}.{name} is not available in this build of Nibble")
    return fn


def has_command(name: str) -> bool:
    """Whether ``nibble <name>`` exists (engine/commands/<name>.py)."""
    try:
        importlib.import_module(f"engine.commands.{name}")
    except ImportError:
        return False
    return True


def command_options(name: str) -> set[str]:
    """The option strings ``nibble <name>`` accepts (empty when the command is missing)."""
    import argparse

    try:
        mod = importlib.import_module(f"engine.commands.{name}")
    except ImportError:
        return set()
    parser = argparse.ArgumentParser(add_help=False)
    mod.add_arguments(parser)
    return set(parser._option_string_actions)


def not_available_text(what: str) -> str:
    return f"{what} is not available in this build of Nibble."


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` or ``obj.name``: engine results come as dataclasses or dicts."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)
