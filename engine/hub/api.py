"""What the Hub knows about models: search, details with tensor shapes from safetensors headers, and
whether Nibble can use a repository (no safetensors, custom code) before anything is downloaded."""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from huggingface_hub import ModelInfo
from huggingface_hub.errors import (
    GatedRepoError,
    RepositoryNotFoundError,
)
from huggingface_hub.file_download import hf_hub_url, repo_folder_name
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from engine.core.errors import NibbleError
from engine.models import families
from engine.hub.common import (
    TIMEOUT,
    api_client,
    check_file_name,
    check_repo_id,
    check_revision,
    endpoint,
    hub_errors,
    require_online,
    token_hint,
)
from engine.models.resolve import INDEX_FILE, cache_dir, check_config

_TEXT_GENERATION = "text-generation"
_SEARCH_FIELDS = ["downloads", "likes", "safetensors", "gated", "cardData", "pipeline_tag", "lastModified", "tags", "private",
                  "config"]
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
# Everything besides weights that loading a transformers causal LM and its tokenizer reads.
_SUPPORT_FILES = re.compile(
    r"(config\.json|generation_config\.json|tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json"
    r"|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(jinja|json)|spiece\.model"
    r"|model\.safetensors\.index\.json)"
)

log = logging.getLogger(__name__)


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
    architecture: str | None = None  # from config.json's architectures (or model_type)
    family: str | None = None  # the registered family Nibble converts it as; None: it cannot (or unknown)

    @property
    def convertible(self) -> bool | None:
        """Whether Nibble can convert it, judged from config.json before any download; None: no config seen."""
        return None if self.architecture is None else self.family is not None


def _mark_family(model: HubModel, config: dict | None) -> None:
    """Fill ``architecture`` and ``family`` from a config.json (or the Hub's summary of it)."""
    if not isinstance(config, dict):
        return
    archs = config.get("architectures") or []
    model.architecture = archs[0] if archs else config.get("model_type")
    fam = families.find(config)
    model.family = fam.name if fam is not None else None


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
    model = HubModel(
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
    _mark_family(model, getattr(info, "config", None))
    return model


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
    require_online()
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
    with hub_errors(None, token):
        response = get_session().get(
            f"{endpoint()}/api/models", params=params, headers=build_hf_headers(token=token), timeout=TIMEOUT
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


#: The largest JSON file read from the Hub (a big sharded model's index is a few MB).
MAX_JSON_BYTES = 64 << 20


def fetch_json(repo_id: str, filename: str, sha: str | None, token: str | None) -> dict:
    """A small JSON file of a repository, read into memory (nothing is written: the download stores files,
    under names it has checked)."""
    check_file_name(filename, repo_id)
    if sha and re.fullmatch(r"[0-9a-f]{40}", sha):  # a downloaded snapshot already holds it
        cached = cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / sha / filename
        if cached.is_file():
            try:
                return json.loads(cached.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass  # damaged: read it from the Hub
    url = hf_hub_url(repo_id, filename, revision=sha or "main", endpoint=endpoint())
    body = bytearray()
    with get_session().stream("GET", url, headers=build_hf_headers(token=token), timeout=TIMEOUT,
                              follow_redirects=True) as r:
        if r.status_code >= 400:
            r.read()
            hf_raise_for_status(r)
        for chunk in r.iter_bytes():
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise NibbleError(f"{repo_id}: {filename} is larger than {MAX_JSON_BYTES >> 20} MB; the repository "
                                  "looks broken")
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except ValueError as exc:
        raise NibbleError(f"{repo_id}: {filename} is not valid JSON ({exc}); the repository looks broken") from None
    if not isinstance(data, dict):
        raise NibbleError(f"{repo_id}: {filename} is not a JSON object; the repository looks broken")
    return data


def weight_files(names: list[str], weight_map: dict | None) -> list[str]:
    """The safetensors files that make up the model (not duplicates like consolidated.safetensors)."""
    top = [n for n in names if "/" not in n and n.endswith(".safetensors")]
    if weight_map:
        return sorted(set(weight_map.values()))
    if "model.safetensors" in top:
        return ["model.safetensors"]
    return sorted(top)


def repo_model(repo_id: str, revision: str | None, token: str | None) -> HubModel:
    """Model info with the file list (sizes, LFS checksums) of one revision."""
    check_repo_id(repo_id)
    check_revision(revision)
    info = api_client(token).model_info(repo_id, revision=revision, files_metadata=True, timeout=TIMEOUT)
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
    require_online()
    with hub_errors(repo_id, token, revision):
        model = repo_model(repo_id, revision, token)
        names = [f.name for f in model.files]
        sizes = {f.name: f.size for f in model.files}
        weight_map = None
        try:
            if "config.json" in names:
                model.config = fetch_json(repo_id, "config.json", model.sha, token)
                _mark_family(model, model.config)
            if INDEX_FILE in names:
                weight_map = fetch_json(repo_id, INDEX_FILE, model.sha, token).get("weight_map") or {}
        except (GatedRepoError, RepositoryNotFoundError):
            model.needs_token = True
        weights = weight_files(names, weight_map)
        if weights:
            model.safetensors_bytes = sum(sizes.get(w, 0) for w in weights)
        model.download_bytes = sum(sizes[n] for n in support_files(names) + weights)
        if with_tensors and weights and not model.needs_token:
            api = api_client(token)

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
    """A :class:`engine.models.source.SourceModel` of a Hub model built from its headers only, for memory
    estimates before a download. Its ``path`` is the cache snapshot the download would fill; tensor
    offsets are relative to each file's data section, so tensor data cannot be read from it."""
    from engine.models.source import SourceModel, TensorInfo

    details = model_details(repo_id, revision=revision, token=token)
    if details.needs_token:
        raise NibbleError(f"{repo_id} is gated: give Nibble your Hugging Face token ({token_hint()}) to read its size")
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


def support_files(names: list[str]) -> list[str]:
    return sorted(n for n in names if "/" not in n and _SUPPORT_FILES.fullmatch(n))


# --------------------------------------------------------------------------------------------------
# What Nibble can and cannot use


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
    require_online()
    with hub_errors(repo_id, token, revision):
        model = repo_model(repo_id, revision, token)
        names = [f.name for f in model.files]
        if not any("/" not in n and n.endswith(".safetensors") for n in names):
            raise _explain_no_safetensors(repo_id, names)
        if "config.json" not in names:
            raise NibbleError(f"{repo_id} has no config.json; Nibble needs a transformers model repository")
        model.config = fetch_json(repo_id, "config.json", model.sha, token)
    note = check_config(model.config, repo_id)
    if note:
        log.warning(note)
    _mark_family(model, model.config)
    return model


_REQUANTIZABLE = re.compile(r"(f16|bf16|q8_0)", re.I)


def converted_families() -> list[str]:
    """The names of the model families Nibble converts, sorted."""
    return sorted(f.name for f in families.families())


def requantizable_gguf(model: HubModel) -> str | None:
    """A GGUF in the repository (of ``model_details``) Nibble can requantize: F16, BF16 or Q8_0; None if none."""
    ggufs = sorted(f.name for f in model.files if f.name.endswith(".gguf") and _REQUANTIZABLE.search(f.name))
    return ggufs[0] if ggufs else None


def conversion_note(model: HubModel) -> str | None:
    """One line for a model Nibble cannot convert: why, and the GGUF in the same repository it can
    requantize instead (F16, BF16 or Q8_0), if there is one. None when it can convert it (or cannot tell)."""
    if model.convertible is not False:
        return None
    gguf = requantizable_gguf(model)
    text = (f"{model.id}: Nibble cannot convert architecture {model.architecture} "
            f"(it converts {', '.join(converted_families())})")
    if gguf:
        return (f"{text}; this repository has {gguf}, which Nibble can requantize: "
                f"nibble download {model.id} --gguf {gguf}, then nibble quantize that file")
    return text + "; look for a GGUF of it (F16, BF16 or Q8_0) to requantize instead"


