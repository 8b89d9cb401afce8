"""Models already in the local Hugging Face cache (works offline)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants

from engine.models.resolve import weights_complete

log = logging.getLogger(__name__)


log = logging.getLogger(__name__)


@dataclass
class CachedModel:
    """A model repository in the local Hugging Face cache."""

    id: str
    size_bytes: int
    path: Path  # the snapshot folder
    revision: str
    has_safetensors: bool
    gguf_files: list[str]
    complete: bool  # every weight file the index names is there (or a .gguf is)
    last_accessed: float = 0.0


def list_cached_models() -> list[CachedModel]:
    """Models in the local Hugging Face cache (works offline), most recently used first."""
    from huggingface_hub import scan_cache_dir

    cache = Path(constants.HF_HUB_CACHE)
    if not cache.is_dir():
        return []
    out = []
    for repo in scan_cache_dir(cache).repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revs = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified), reverse=True)
        rev = revs[0]
        snap = Path(rev.snapshot_path)
        rel = [str(Path(f.file_path).relative_to(snap)) for f in rev.files]
        out.append(
            CachedModel(
                id=repo.repo_id,
                size_bytes=repo.size_on_disk,
                path=snap,
                revision=rev.commit_hash,
                has_safetensors=any(n.endswith(".safetensors") for n in rel),
                gguf_files=sorted(n for n in rel if n.endswith(".gguf")),
                complete=weights_complete(snap),
                last_accessed=repo.last_accessed,
            )
        )
    out.sort(key=lambda m: m.last_accessed, reverse=True)
    return out


