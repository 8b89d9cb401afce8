"""Model families: one module each, registered once (see :mod:`engine.models.families.registry`)."""

from engine.models.families.registry import architectures, families, find, for_config, for_gguf_arch, register

__all__ = ["architectures", "families", "find", "for_config", "for_gguf_arch", "register"]
