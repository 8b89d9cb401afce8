"""The family registry: every module of this package registers its families here, once.

Adding a family is adding one module that defines a :class:`~engine.models.families.base.Family`
subclass decorated with :func:`register`; the converter, the estimate, AWQ, stats and every "not
supported" message find it through the functions below.
"""

from __future__ import annotations

import importlib
import pkgutil

from engine.core.errors import NibbleError

_FAMILIES: list = []
_LOADED = False
_SKIP = {"base", "hparams", "registry", "tensors"}


def register(cls):
    """Class decorator: one instance of ``cls`` joins the registry."""
    _FAMILIES.append(cls())
    return cls


def families() -> list:
    """Every registered family, in registration order of their modules (alphabetical)."""
    global _LOADED
    if not _LOADED:
        import engine.models.families as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name not in _SKIP:
                importlib.import_module(f"{pkg.__name__}.{info.name}")
        _LOADED = True
    return list(_FAMILIES)


def architectures() -> list[str]:
    """Every Hugging Face architecture Nibble converts, sorted."""
    return sorted(a for f in families() for a in f.architectures)


def supported_text() -> str:
    return ", ".join(architectures())


def _arch_and_type(config: dict) -> tuple[str | None, str | None]:
    archs = config.get("architectures") or []
    arch = archs[0] if archs and isinstance(archs[0], str) else None
    model_type = config.get("model_type")
    return arch, model_type if isinstance(model_type, str) else None


def find(config: dict):
    """The family serving ``config`` (a parsed config.json), or None. Architectures decide; a config
    without them is matched by model_type."""
    arch, model_type = _arch_and_type(config)
    for f in families():
        if arch is not None and arch in f.architectures:
            return f
    if arch is None and model_type is not None:
        for f in families():
            if model_type in f.model_types:
                return f
    return None


def for_config(config: dict, where: str = "config.json"):
    """The family of ``config``, checked: a one-line NibbleError naming ``where`` and the field when Nibble
    cannot convert it (unknown architecture, model_type that disagrees with it, unhandled option)."""
    arch, model_type = _arch_and_type(config)
    fam = find(config)
    if fam is None:
        shown = arch or model_type or "unknown"
        raise NibbleError(f"{where}: architecture {shown} is not supported; Nibble converts {supported_text()}")
    if arch is not None and model_type is not None and model_type not in fam.model_types:
        raise NibbleError(f"{where}: model_type {model_type!r} disagrees with architectures [{arch!r}] "
                          f"(a {fam.name} model has model_type {' or '.join(map(repr, fam.model_types))}); "
                          "fix the file or download it again")
    fam.check(config, where)
    return fam


def for_gguf_arch(arch: str):
    """The family that writes GGUF architecture ``arch`` (e.g. "gemma3"), or None."""
    import gguf

    for f in families():
        if gguf.MODEL_ARCH_NAMES[f.gguf_arch] == arch:
            return f
    return None
