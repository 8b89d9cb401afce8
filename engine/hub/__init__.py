"""Models from the Hugging Face Hub: what it knows (api), getting them (download), what is already here
(cache), and the user's token (token).

Everything goes through ``huggingface_hub`` (its HTTP session, headers, error types and cache layout), so
downloads land in the standard cache (``HF_HOME`` / ``HF_HUB_CACHE``) where transformers and other tools
find them. Offline (``HF_HUB_OFFLINE=1`` or no connection) every Hub call fails at once with a
:class:`NibbleError` starting ``offline:``; the cache and local folders keep working. Resolving a name
the user typed to a local path is :mod:`engine.models.resolve`'s job.
"""

from engine.hub.api import (
    HubFile,
    HubModel,
    TensorSpec,
    check_repo,
    conversion_note,
    converted_families,
    model_details,
    requantizable_gguf,
    remote_source,
    search_models,
)
from engine.hub.cache import CachedModel, list_cached_models
from engine.hub.common import is_offline, mask_token
from engine.hub.download import download_model
from engine.hub.token import TokenStatus, forget_token, save_token, token_status
from engine.models.resolve import (
    cache_dir,
    cached_snapshot,
    check_config,
    resolve_model,
)

__all__ = [
    "CachedModel", "HubFile", "HubModel", "TensorSpec", "TokenStatus", "cache_dir", "cached_snapshot", "check_config",
    "check_repo", "conversion_note", "converted_families", "requantizable_gguf", "download_model", "forget_token", "is_offline", "list_cached_models", "mask_token", "model_details",
    "remote_source", "resolve_model", "save_token", "search_models", "token_status",
]
