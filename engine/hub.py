"""Models from the Hugging Face Hub, the local Hugging Face cache and local folders.

Everything here goes through ``huggingface_hub`` (its HTTP session, headers, error types and cache
layout), so downloads land in the standard cache (``HF_HOME`` / ``HF_HUB_CACHE``) where transformers and
other tools find them, and models already there are found by Nibble.

- :func:`search_models`, :func:`model_details`: what the Hub knows, including parameter counts and tensor
  shapes from safetensors headers (a few kilobytes each), so memory can be estimated before a download.
- :func:`check_repo`: refuses what Nibble cannot use (no safetensors, code that would need
  ``trust_remote_code``) and says what the repository has instead.
- :func:`download_model`: only the files Nibble needs, byte progress, a free-disk check first, cancel
  between chunks, and resume of an interrupted file (the partial file is kept as
  ``blobs/<etag>.incomplete`` when the network drops; a user's cancel removes it).
- :func:`list_cached_models`, :func:`resolve_model`: what is on disk, offline.
- :func:`token_status`, :func:`save_token`, :func:`forget_token`: the user's Hub token. It is never printed
  or logged; messages show it masked.

Offline (``HF_HUB_OFFLINE=1`` or no connection) every Hub call fails at once with a
:class:`NibbleError` starting ``offline:``; the cache and local folders keep working.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, ModelInfo, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_download, hf_hub_url, repo_folder_name
from huggingface_hub.utils import WeakFileLock, build_hf_headers, get_session, hf_raise_for_status

from engine.errors import Cancelled, NibbleError
from engine.progress import Reporter

#: Seconds to wait for the Hub to answer before calling it unreachable.
TIMEOUT = 10.0
#: Bytes between two progress reports of a download (cancel is checked on every piece received).
CHUNK_BYTES = 1 << 20

_TEXT_GENERATION = "text-generation"
_SEARCH_FIELDS = ["downloads", "likes", "safetensors", "gated", "cardData", "pipeline_tag", "lastModified", "tags", "private"]
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_INDEX = "model.safetensors.index.json"
# Everything besides weights that loading a transformers causal LM and its tokenizer reads.
_SUPPORT_FILES = re.compile(
    r"(config\.json|generation_config\.json|tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json"
    r"|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(jinja|json)|spiece\.model"
    r"|model\.safetensors\.index\.json)"
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class HubFile:
    """One file of a Hub repository."""

    name: str
    size: int
    sha256: str | None = None  # LFS files only


@dataclass
class TensorSpec:
    """One tensor as its safetensors header describes it (no data)."""

    name: str
    dtype: str
    shape: list[int]
    file: str
    nbytes: int = 0


@dataclass
class HubModel:
    """A model on the Hub. Search results fill the first fields; :func:`model_details` fills the rest."""

    id: str
    downloads: int = 0
    likes: int = 0
    params: int | None = None  # parameter count from safetensors metadata
    safetensors_bytes: int | None = None  # size of the safetensors weights Nibble would download
    gated: bool = False
    license: str | None = None
    pipeline_tag: str | None = None
    last_modified: datetime | None = None
    private: bool = False
    sha: str | None = None
    files: list[HubFile] = field(default_factory=list)
    download_bytes: int | None = None  # everything download_model would fetch
    tensors: list[TensorSpec] = field(default_factory=list)
    config: dict | None = None
    needs_token: bool = False  # gated/private and no token with access: tensors/config not read


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


@dataclass
class TokenStatus:
    present: bool
    source: str | None  # "HF_TOKEN" or "stored login"
    masked: str | None
    user: str | None = None


# --------------------------------------------------------------------------------------------------
# Errors, offline mode, tokens


def mask_token(token: str | None) -> str:
    if not token:
        return ""
    return f"{token[:3]}…{token[-4:]}" if len(token) >= 12 else "****"


def is_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in ("1", "ON", "YES", "TRUE")


def _offline_error(reason: str) -> NibbleError:
    return NibbleError(f"offline: {reason}; models in the local cache and local folders still work")


def _require_online() -> None:
    if is_offline():
        raise _offline_error("HF_HUB_OFFLINE is set, so Nibble does not contact the Hub")


def _endpoint() -> str:
    return constants.ENDPOINT


def _api(token: str | None) -> HfApi:
    return HfApi(endpoint=_endpoint(), token=token or None)


def _scrub(text: str, *tokens: str | None) -> str:
    from huggingface_hub import get_token

    for tok in (*tokens, get_token()):
        if tok:
            text = text.replace(tok, mask_token(tok))
    return text


def _token_hint() -> str:
    return "set HF_TOKEN, run `nibble login`, or paste a token in Nibble's settings"


@contextlib.contextmanager
def _hub_errors(repo_id: str | None, token: str | None = None, revision: str | None = None):
    """Turn what ``huggingface_hub`` and the network raise into one-line messages for the user."""
    try:
        yield
    except (NibbleError, KeyboardInterrupt):
        raise
    except OfflineModeIsEnabled:
        raise _offline_error("HF_HUB_OFFLINE is set, so Nibble does not contact the Hub") from None
    except GatedRepoError:
        page = f"{_endpoint()}/{repo_id}"
        from huggingface_hub import get_token

        if token or get_token():
            msg = (f"{repo_id} is gated and your token has no access to it yet: accept its terms at {page} "
                   "with the account that owns the token, then try again")
        else:
            msg = f"{repo_id} is gated: accept its terms at {page}, then give Nibble your Hugging Face token ({_token_hint()})"
        raise NibbleError(msg) from None
    except RevisionNotFoundError:
        raise NibbleError(f"{repo_id} has no revision '{revision}'; leave out --revision to use main") from None
    except RepositoryNotFoundError:
        raise NibbleError(
            f"no model '{repo_id}' on the Hugging Face Hub: check the spelling (owner/name); "
            f"a private model also needs your token ({_token_hint()})"
        ) from None
    except RemoteEntryNotFoundError as exc:
        raise NibbleError(_scrub(f"{repo_id}: a file is missing on the Hub ({exc.response.url.path})", token)) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            shown = f" {mask_token(token)}" if token else ""
            raise NibbleError(
                f"the Hub refused the token{shown} (status 401): copy a fresh read token from "
                f"{_endpoint()}/settings/tokens, then {_token_hint()}"
            ) from None
        first = _scrub(str(exc), token).splitlines()[0]
        raise NibbleError(f"the Hub answered {status} for {repo_id or 'the request'}: {first}; try again later") from None
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        reason = type(exc).__name__ if isinstance(exc, httpx2.TransportError) else "connection failed"
        raise _offline_error(f"cannot reach {_endpoint()} ({reason})") from None


def token_status(*, check_online: bool = False) -> TokenStatus:
    """Which Hub token Nibble would use, masked. ``check_online`` asks the Hub whose it is."""
    from huggingface_hub import get_token

    token = get_token()
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    source = None if not token else ("HF_TOKEN" if env and env.strip() == token else "stored login")
    status = TokenStatus(present=bool(token), source=source, masked=mask_token(token) or None)
    if check_online and token:
        _require_online()
        with _hub_errors(None, token):
            status.user = _whoami(token)
    return status


def _whoami(token: str) -> str:
    """The Hub user a token belongs to (raises the Hub's 401 for a bad token)."""
    response = get_session().get(
        f"{_endpoint()}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=TIMEOUT
    )
    hf_raise_for_status(response)
    return response.json()["name"]


def save_token(token: str) -> str:
    """Check ``token`` with the Hub and store it with ``huggingface_hub``'s login; returns the user name."""
    from huggingface_hub import login

    token = (token or "").strip()
    if not token:
        raise NibbleError("no token given: copy a read token from https://huggingface.co/settings/tokens")
    if any(ch.isspace() for ch in token):
        raise NibbleError("that does not look like a Hugging Face token (it contains spaces); paste the token only")
    _require_online()
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # login() logs where it saved things; keep the console quiet
    try:
        with _hub_errors(None, token):
            user = _whoami(token)  # fails fast (short timeout) before login() asks again
            try:
                login(token=token, add_to_git_credential=False)
            except ValueError as exc:  # organisation tokens, invalid tokens
                raise NibbleError(f"the Hub refused the token {mask_token(token)}: {_scrub(str(exc), token)}") from None
    finally:
        hub_logger.setLevel(level)
    return user


def forget_token() -> None:
    """Remove the stored login (HF_TOKEN in the environment is not touched)."""
    from huggingface_hub import logout

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        logout()
    finally:
        hub_logger.setLevel(level)


# --------------------------------------------------------------------------------------------------
# Search and details


def _param_bound(n: int) -> str:
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(int(n))


def _license(info: ModelInfo) -> str | None:
    card = info.card_data
    lic = card.get("license") if isinstance(card, dict) else getattr(card, "license", None)
    if not lic:
        lic = next((t.split(":", 1)[1] for t in (info.tags or []) if t.startswith("license:")), None)
    return lic if isinstance(lic, str) or lic is None else ", ".join(map(str, lic))


def _from_info(info: ModelInfo) -> HubModel:
    params = size = None
    if info.safetensors:
        params = int(info.safetensors.total)
        size = sum(int(n) * _DTYPE_BYTES.get(dtype, 2) for dtype, n in info.safetensors.parameters.items())
    return HubModel(
        id=info.id,
        downloads=info.downloads or 0,
        likes=info.likes or 0,
        params=params,
        safetensors_bytes=size,
        gated=bool(info.gated),
        license=_license(info),
        pipeline_tag=info.pipeline_tag,
        last_modified=info.last_modified,
        private=bool(info.private),
        sha=info.sha,
    )


def search_models(
    query: str = "",
    *,
    sort: str = "downloads",
    max_params: int | None = None,
    min_params: int | None = None,
    limit: int = 50,
    token: str | None = None,
) -> list[HubModel]:
    """Text-generation models on the Hub whose id contains ``query``.

    ``sort``: "downloads", "recent" (last modified) or "likes". ``max_params``/``min_params`` filter on the
    parameter count from safetensors metadata (models without it are left out when a bound is given).
    """
    sorts = {"downloads": "downloads", "recent": "lastModified", "likes": "likes"}
    if sort not in sorts:
        raise NibbleError(f"unknown sort '{sort}': use one of {', '.join(sorts)}")
    _require_online()
    params: dict = {
        "pipeline_tag": _TEXT_GENERATION,
        "sort": sorts[sort],
        "limit": max(1, int(limit)),
        "expand": _SEARCH_FIELDS,
    }
    if query.strip():
        params["search"] = query.strip()
    bounds = []
    if min_params:
        bounds.append(f"min:{_param_bound(min_params)}")
    if max_params:
        bounds.append(f"max:{_param_bound(max_params)}")
    if bounds:
        params["num_parameters"] = ",".join(bounds)
    with _hub_errors(None, token):
        response = get_session().get(
            f"{_endpoint()}/api/models", params=params, headers=build_hf_headers(token=token), timeout=TIMEOUT
        )
        hf_raise_for_status(response)
        items = response.json()
    models = [_from_info(ModelInfo(**{"siblings": None, **item})) for item in items]
    if bounds:
        models = [
            m for m in models
            if m.params is not None
            and (not max_params or m.params <= max_params)
            and (not min_params or m.params >= min_params)
        ]  # fmt: skip
    return models[:limit]


def _fetch_json(repo_id: str, filename: str, sha: str, token: str | None) -> dict:
    path = hf_hub_download(
        repo_id, filename, revision=sha, token=token, cache_dir=constants.HF_HUB_CACHE, etag_timeout=TIMEOUT
    )
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NibbleError(f"{repo_id}: {filename} is not valid JSON ({exc}); the repository looks broken") from None


def _weight_files(names: list[str], weight_map: dict | None) -> list[str]:
    """The safetensors files that make up the model (not duplicates like consolidated.safetensors)."""
    top = [n for n in names if "/" not in n and n.endswith(".safetensors")]
    if weight_map:
        return sorted(set(weight_map.values()))
    if "model.safetensors" in top:
        return ["model.safetensors"]
    return sorted(top)


def _repo_model(repo_id: str, revision: str | None, token: str | None) -> HubModel:
    """Model info with the file list (sizes, LFS checksums) of one revision."""
    info = _api(token).model_info(repo_id, revision=revision, files_metadata=True, timeout=TIMEOUT)
    model = _from_info(info)
    model.files = [HubFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None) for s in info.siblings or []]
    return model


def model_details(
    repo_id: str, *, revision: str | None = None, token: str | None = None, with_tensors: bool = True
) -> HubModel:
    """Everything Nibble needs to show and estimate a Hub model before downloading it.

    Reads the file list with sizes, ``config.json`` and the safetensors headers (tensor names, dtypes,
    shapes) with small range requests. For a gated model without access the file list is still given
    and ``needs_token`` is set.
    """
    _require_online()
    with _hub_errors(repo_id, token, revision):
        model = _repo_model(repo_id, revision, token)
        names = [f.name for f in model.files]
        sizes = {f.name: f.size for f in model.files}
        weight_map = None
        try:
            if "config.json" in names:
                model.config = _fetch_json(repo_id, "config.json", model.sha, token)
            if _INDEX in names:
                weight_map = _fetch_json(repo_id, _INDEX, model.sha, token).get("weight_map") or {}
        except (GatedRepoError, RepositoryNotFoundError):
            model.needs_token = True
        weights = _weight_files(names, weight_map)
        if weights:
            model.safetensors_bytes = sum(sizes.get(w, 0) for w in weights)
        model.download_bytes = sum(sizes[n] for n in _support_files(names) + weights)
        if with_tensors and weights and not model.needs_token:
            api = _api(token)

            def header(name: str):
                return name, api.parse_safetensors_file_metadata(
                    repo_id, name, revision=model.sha, token=token, timeout=TIMEOUT
                )

            with ThreadPoolExecutor(max_workers=4) as pool:
                for name, meta in pool.map(header, weights):
                    for tname, t in meta.tensors.items():
                        begin, end = t.data_offsets
                        model.tensors.append(TensorSpec(tname, t.dtype, list(t.shape), name, int(end) - int(begin)))
            if model.params is None:
                model.params = sum(_numel(t.shape) for t in model.tensors)
    return model


def remote_source(repo_id: str, *, revision: str | None = None, token: str | None = None):
    """A :class:`engine.source.SourceModel` of a Hub model built from its headers only, for memory
    estimates before a download. Its ``path`` is the cache snapshot the download would fill; tensor
    offsets are relative to each file's data section, so tensor data cannot be read from it."""
    from engine.source import SourceModel, TensorInfo

    details = model_details(repo_id, revision=revision, token=token)
    if details.needs_token:
        raise NibbleError(f"{repo_id} is gated: give Nibble your Hugging Face token ({_token_hint()}) to read its size")
    if not details.tensors:
        raise _explain_no_safetensors(repo_id, [f.name for f in details.files])
    snap = cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / (details.sha or "main")
    tensors = {
        t.name: TensorInfo(t.name, tuple(t.shape), t.dtype, snap / t.file, 0, t.nbytes) for t in details.tensors
    }
    return SourceModel(path=snap, config=details.config or {}, tensors=tensors, files=sorted({snap / t.file for t in details.tensors}))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _support_files(names: list[str]) -> list[str]:
    return sorted(n for n in names if "/" not in n and _SUPPORT_FILES.fullmatch(n))


# --------------------------------------------------------------------------------------------------
# What Nibble can and cannot use


def check_config(config: dict, where: str) -> None:
    """Refuse a model whose config needs the repository's own Python code."""
    auto_map = config.get("auto_map")
    if auto_map:
        classes = ", ".join(sorted({str(v if isinstance(v, str) else v[0]).split(".")[0] for v in auto_map.values()}))
        raise NibbleError(
            f"{where} needs its own Python code to load (auto_map in config.json points at {classes}); "
            "Nibble never runs code from a model repository (trust_remote_code stays off): "
            "pick a model whose architecture transformers supports natively"
        )
    model_type = config.get("model_type")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if not model_type:
        raise NibbleError(f"{where}: config.json has no model_type, so Nibble cannot tell which architecture it is")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise NibbleError(
            f"{where} uses the architecture '{model_type}', which transformers does not know; it would need the "
            "repository's own code, which Nibble never runs (trust_remote_code stays off)"
        )


def _explain_no_safetensors(repo_id: str, names: list[str]) -> NibbleError:
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    bins = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth")) and "training_args" not in n)
    if ggufs:
        shown = ", ".join(ggufs[:4]) + (f" and {len(ggufs) - 4} more" if len(ggufs) > 4 else "")
        return NibbleError(
            f"{repo_id} has no safetensors weights, only GGUF files ({shown}): Nibble cannot quantize from GGUF, "
            f"but it can chat with and evaluate one: nibble download {repo_id} --gguf {ggufs[0]}"
        )
    if bins:
        return NibbleError(
            f"{repo_id} has only PyTorch checkpoint files ({', '.join(bins[:3])}), no safetensors: Nibble reads "
            "safetensors only (checkpoint files are pickles that can run code when loaded); look for a "
            "safetensors copy of this model on the Hub"
        )
    shown = ", ".join(n for n in names[:8]) or "no files"
    return NibbleError(
        f"{repo_id} has no safetensors weights ({shown}); Nibble needs a transformers model saved as safetensors"
    )


def check_repo(repo_id: str, *, revision: str | None = None, token: str | None = None) -> HubModel:
    """Details of a Hub model Nibble can quantize, or a :class:`NibbleError` saying why not and what instead."""
    _require_online()
    with _hub_errors(repo_id, token, revision):
        model = _repo_model(repo_id, revision, token)
        names = [f.name for f in model.files]
        if not any("/" not in n and n.endswith(".safetensors") for n in names):
            raise _explain_no_safetensors(repo_id, names)
        if "config.json" not in names:
            raise NibbleError(f"{repo_id} has no config.json; Nibble needs a transformers model repository")
        model.config = _fetch_json(repo_id, "config.json", model.sha, token)
    check_config(model.config, repo_id)
    return model


# --------------------------------------------------------------------------------------------------
# Download


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _check_disk(folder: Path, needed: int, repo_id: str) -> None:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise NibbleError(
            f"not enough disk space for {repo_id}: the download needs {_fmt_bytes(needed)} but {probe} has "
            f"{_fmt_bytes(free)} free; free some space or set HF_HOME to a folder on a larger disk"
        )


def _link(blob: Path, pointer: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:  # no symlinks (Windows without developer mode): the snapshot holds the file itself
        shutil.copyfile(blob, pointer)


class _Checksum:
    """The Hub's ETag: sha256 for LFS files, the git blob id (sha1 of "blob <size>\\0" + data) otherwise."""

    def __init__(self, etag: str, size: int):
        self.etag = etag
        self.size = size
        self.reset()

    def reset(self) -> None:
        if re.fullmatch(r"[0-9a-f]{64}", self.etag):
            self.h = hashlib.sha256()
        elif re.fullmatch(r"[0-9a-f]{40}", self.etag):
            self.h = hashlib.sha1(b"blob %d\0" % self.size)
        else:
            self.h = None

    def update(self, data: bytes) -> None:
        if self.h is not None:
            self.h.update(data)

    def ok(self) -> bool:
        return self.h is None or self.h.hexdigest() == self.etag


class _Transfer:
    """Byte counts across all files of one download, for the reporter."""

    def __init__(self, reporter: Reporter, total: int, done: int):
        self.reporter, self.total, self.done = reporter, total, done

    def advance(self, n: int, name: str) -> None:
        self.done += n
        self.reporter.progress(self.done, self.total, f"downloading {name}", unit="bytes", file=name)


def _download_file(
    repo_id: str, name: str, sha: str, storage: Path, token: str | None, transfer: _Transfer, retries: int
) -> None:
    url = hf_hub_url(repo_id, name, revision=sha, endpoint=_endpoint())
    meta = get_hf_file_metadata(url, token=token, timeout=TIMEOUT, endpoint=_endpoint())
    if not meta.etag or meta.size is None:
        raise NibbleError(f"{repo_id}: the Hub did not say the size and checksum of {name}; try again later")
    size = meta.size
    blob = storage / "blobs" / meta.etag
    pointer = storage / "snapshots" / sha / name
    blob.parent.mkdir(parents=True, exist_ok=True)
    headers = build_hf_headers(token=token)
    if httpx2.URL(meta.location).host != httpx2.URL(url).host:
        headers.pop("authorization", None)  # signed CDN address: the token stays with the Hub
    lock = storage.parent / ".locks" / storage.name / f"{meta.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(lock)):
        if blob.exists() and blob.stat().st_size == size:
            _link(blob, pointer)
            return
        part = blob.with_name(blob.name + ".incomplete")
        check = _Checksum(meta.etag, size)
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have:
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                    check.update(chunk)
        if have:
            transfer.advance(have, name)
        failures = 0
        try:
            while have < size:
                try:
                    request_headers = dict(headers, **({"Range": f"bytes={have}-"} if have else {}))
                    timeout = httpx2.Timeout(TIMEOUT, read=60.0)
                    with get_session().stream("GET", meta.location, headers=request_headers, timeout=timeout) as r:
                        if r.status_code >= 400:
                            r.read()
                            hf_raise_for_status(r)
                        if have and r.status_code != 206:  # the server ignored Range: start over
                            transfer.advance(-have, name)
                            part.unlink(missing_ok=True)
                            check.reset()
                            have = 0
                        with part.open("ab") as out:
                            unreported = 0
                            try:
                                # pieces as they arrive, so a dropped connection loses nothing already received
                                for chunk in r.iter_bytes():
                                    out.write(chunk)
                                    check.update(chunk)
                                    have += len(chunk)
                                    unreported += len(chunk)
                                    failures = 0
                                    if unreported >= CHUNK_BYTES:
                                        transfer.advance(unreported, name)
                                        unreported = 0
                                    transfer.reporter.check_cancel()
                            finally:
                                if unreported:
                                    transfer.advance(unreported, name)
                    if have < size:
                        raise httpx2.RemoteProtocolError("connection closed before the end of the file")
                except httpx2.TransportError as exc:
                    failures += 1
                    if failures > retries:
                        raise NibbleError(
                            f"network lost while downloading {name} from {repo_id} ({_fmt_bytes(have)} of "
                            f"{_fmt_bytes(size)} kept; {type(exc).__name__}): run `nibble download {repo_id}` "
                            "again to resume"
                        ) from None
                    log.warning("connection to the Hub dropped during %s; resuming at byte %d", name, have)
                    time.sleep(0.5 * failures)
        except (Cancelled, KeyboardInterrupt):
            part.unlink(missing_ok=True)  # the user stopped: leave nothing half-written behind
            raise
        if have != size or not check.ok():
            part.unlink(missing_ok=True)
            raise NibbleError(f"{name} from {repo_id} arrived damaged (size or checksum differs); download it again")
        os.replace(part, blob)
    _link(blob, pointer)


def download_model(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    reporter: Reporter | None = None,
    gguf: str | None = None,
    retries: int = 3,
) -> Path:
    """Download what Nibble needs of a Hub model into the Hugging Face cache; returns the snapshot folder.

    Only config, tokenizer, generation config and safetensors weights (with their index) are fetched.
    With ``gguf`` set, only that one .gguf file is fetched and its path is returned (for GGUF-only
    repositories). Files already in the cache are not fetched again; a file whose transfer broke off is
    resumed where it stopped. Progress is in bytes over the whole download.
    """
    reporter = reporter or Reporter()
    _require_online()
    with _hub_errors(repo_id, token, revision):
        if gguf:
            model = _repo_model(repo_id, revision, token)
            files = model.files
            if gguf not in {f.name for f in files}:
                have = sorted(f.name for f in files if f.name.endswith(".gguf"))
                raise NibbleError(f"{repo_id} has no file {gguf}; its GGUF files are: {', '.join(have) or 'none'}")
            sha, wanted = model.sha, [gguf]
        else:
            model = check_repo(repo_id, revision=revision, token=token)
            files, sha = model.files, model.sha
            names = [f.name for f in files]
            weight_map = _fetch_json(repo_id, _INDEX, sha, token).get("weight_map") if _INDEX in names else None
            missing = sorted(set((weight_map or {}).values()) - set(names))
            if missing:
                raise NibbleError(f"{repo_id}: {_INDEX} names files the repository does not have ({missing[0]})")
            wanted = _support_files(names) + _weight_files(names, weight_map)
        sizes = {f.name: f.size for f in files}
        lfs = {f.name: f.sha256 for f in files if f.sha256}
        storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
        snapshot = storage / "snapshots" / sha
        todo = [n for n in wanted if not (snapshot / n).exists()]
        total = sum(sizes[n] for n in wanted)
        # an interrupted file waits as blobs/<sha256>.incomplete; what it holds needs no new space
        parts = [storage / "blobs" / f"{lfs[n]}.incomplete" for n in todo if n in lfs]
        partial = sum(p.stat().st_size for p in parts if p.exists())
        _check_disk(storage, sum(sizes[n] for n in todo) - partial, repo_id)
        transfer = _Transfer(reporter, total, total - sum(sizes[n] for n in todo))
        reporter.progress(transfer.done, total, f"{repo_id}: {len(todo)} of {len(wanted)} files to download",
                          unit="bytes")  # fmt: skip
        for name in todo:
            reporter.check_cancel()
            _download_file(repo_id, name, sha, storage, token, transfer, retries)
        ref = storage / "refs" / (revision or "main")
        if not re.fullmatch(r"[0-9a-f]{40}", revision or ""):
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(sha)
        reporter.progress(total, total, f"{repo_id} is ready", unit="bytes")
    return snapshot / gguf if gguf else snapshot


# --------------------------------------------------------------------------------------------------
# Local cache and folders


def _weights_complete(folder: Path) -> bool:
    index = folder / _INDEX
    if index.exists():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError):
            return False
        return bool(shards) and all((folder / s).exists() for s in shards)
    return any(p.exists() for p in folder.glob("*.safetensors")) or any(folder.glob("*.gguf"))


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
                complete=_weights_complete(snap),
                last_accessed=repo.last_accessed,
            )
        )
    out.sort(key=lambda m: m.last_accessed, reverse=True)
    return out


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of a model in the local cache, or None."""
    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    rev = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        commit = rev
    elif (storage / "refs" / rev).is_file():
        commit = (storage / "refs" / rev).read_text().strip()
    elif revision is None and (storage / "snapshots").is_dir():
        snaps = sorted((storage / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        return snaps[0] if snaps else None
    else:
        return None
    snap = storage / "snapshots" / commit
    return snap if snap.is_dir() else None


def _resolve_folder(folder: Path, label: str) -> Path:
    ggufs = sorted(folder.glob("*.gguf"))
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        if not _weights_complete(folder):
            raise NibbleError(f"{label} is missing safetensors shards named in {_INDEX}; download it again")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NibbleError(f"{folder / 'config.json'} is not valid JSON ({exc})") from None
        check_config(config, label)
        return folder
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        raise NibbleError(f"{label} holds several .gguf files ({', '.join(g.name for g in ggufs[:4])}); give one of them")
    raise NibbleError(f"{label} has neither config.json with .safetensors weights nor a .gguf file")


def resolve_model(spec: str | os.PathLike) -> Path:
    """A model the user named, as a path: a local folder, a ``.gguf`` file, a cached Hub id (``owner/name``
    or ``owner/name@revision``) or ``demo``. Works offline; never downloads."""
    text = str(spec).strip()
    if text == "demo":
        try:
            from engine import demo  # type: ignore[attr-defined]
        except ImportError:
            raise NibbleError("the demo model is not part of this Nibble build; give a model folder or Hub id") from None
        return Path(demo.DEMO_DIR)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return _resolve_folder(path.resolve(), str(path))
        if path.suffix.lower() == ".gguf":
            return path.resolve()
        raise NibbleError(f"{path} is not a model: give a folder with config.json and .safetensors, or a .gguf file")
    if _REPO_ID.match(text) and not text.endswith((".gguf", ".safetensors")):
        repo_id, _, revision = text.partition("@")
        snap = cached_snapshot(repo_id, revision or None)
        if snap is not None:
            if not _weights_complete(snap):
                raise NibbleError(f"{repo_id} is only partly downloaded; run `nibble download {repo_id}` to finish it")
            return _resolve_folder(snap, repo_id)
        raise NibbleError(
            f"'{text}' is not a local folder, a .gguf file or a downloaded model; "
            f"download it first: nibble download {repo_id}"
        )
    raise NibbleError(f"no such file or folder: {path}")


def cache_dir() -> Path:
    """The Hugging Face cache folder models are downloaded to (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)."""
    return Path(constants.HF_HUB_CACHE)
