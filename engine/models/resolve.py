"""One resolver for every model a user names: ``demo``, a local folder, a ``.gguf`` file, or a Hub id
(``owner/name`` or ``owner/name@revision``) already in the local Hugging Face cache. Works offline and
never downloads (that is :mod:`engine.hub.download`'s job); also the one policy on repository code."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from pathlib import Path

from engine.core.errors import NibbleError
from engine.core.resources import DEMO_DIR

INDEX_FILE = "model.safetensors.index.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?(@[\w.\-/]+)?$")


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hub id (``owner/name[@revision]``), not of a path or file."""
    return bool(_REPO_ID.match(text)) and not text.endswith((".gguf", ".safetensors"))


log = logging.getLogger("engine")
_noted: set[str] = set()


_NAMES_CODE = ("import json\n"
               "from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES as C\n"
               "from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as M\n"
               "print(json.dumps({'types': sorted(C), 'causal_lm': dict(M)}))")


NAMES_FROM_CHILD = False  # the app sets it: its window must not wait on torch's import


def transformers_names() -> tuple[frozenset, dict]:
    """transformers' model types and its causal-LM architecture for each, as the policy below needs them.

    Importing them imports torch: 2.5 s of the demo's 3.6 s GGUF quantize on a 2-core machine, a command that
    otherwise needs neither, and in the app, whose window must not stall (:data:`NAMES_FROM_CHILD`), a hold on
    Python's interpreter lock. So they are read once per transformers version and kept in Nibble's data folder,
    where every later process reads them: the app reads them the first time in a child process, a command
    here. Once transformers is loaded they are read from it."""
    loaded = "transformers.models.auto.modeling_auto" in sys.modules
    kept = _kept_names()
    if kept is not None and not loaded:
        return kept
    if not NAMES_FROM_CHILD or loaded:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if kept is None:  # none kept yet, or a damaged file
            _keep_names({"types": sorted(CONFIG_MAPPING_NAMES), "causal_lm": dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)})
        return frozenset(CONFIG_MAPPING_NAMES), dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    import subprocess

    from engine.core.spawn import child_env

    out = subprocess.run([sys.executable, "-c", _NAMES_CODE], capture_output=True, text=True, timeout=300,
                         env=child_env(), stdin=subprocess.DEVNULL)
    if out.returncode != 0:  # the library itself is broken: say so through the usual import error
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # noqa: F401
    d = json.loads(out.stdout.strip().splitlines()[-1])
    _keep_names(d)
    return frozenset(d["types"]), dict(d["causal_lm"])


def _kept_names() -> tuple[frozenset, dict] | None:
    """The names kept for this transformers version, or None where there are none (or they are unreadable)."""
    try:
        d = json.loads(_names_file().read_text(encoding="utf-8"))
        types, causal_lm = d["types"], d["causal_lm"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(types, list) and types and all(isinstance(t, str) for t in types)
            and isinstance(causal_lm, dict) and all(isinstance(v, str) for v in causal_lm.values())):
        return None  # not what this module writes: read them again
    return frozenset(types), dict(causal_lm)


def _names_file() -> Path:
    from engine.core.resources import data_dir

    return data_dir() / "transformers-names" / f"{_transformers_version()}.json"


@functools.cache
def _transformers_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("transformers")


def _keep_names(d: dict) -> None:
    cache = _names_file()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(d), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # read again next time


def check_config(config: dict, where: str) -> str | None:
    """The one policy on repository code: a model loads with transformers' own code for its ``model_type``
    or not at all. Refuses a model_type transformers does not know, or architectures that contradict it;
    returns a one-line note when the config names the repository's own code (``auto_map``), which Nibble
    neither runs nor copies into what it writes."""
    CONFIG_MAPPING_NAMES, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = transformers_names()
    if not isinstance(config, dict):
        raise NibbleError(f"{where}: config.json is not a JSON object; download the model again")
    model_type = config.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise NibbleError(f"{where}: config.json has no model_type, so Nibble cannot tell which architecture it is")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise NibbleError(
            f"{where} uses the architecture '{model_type}', which transformers does not know; it would need the "
            "repository's own code, which Nibble never runs (trust_remote_code stays off)"
        )
    archs = config.get("architectures") or []
    own = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    for arch in archs if isinstance(archs, list) else [archs]:
        if arch in known and own and arch != own:
            raise NibbleError(
                f"{where}: config.json contradicts itself (model_type '{model_type}' but architectures {arch}); "
                "fix config.json or download the model again"
            )
    auto_map = config.get("auto_map")
    if auto_map:
        names = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
        modules = ", ".join(sorted({str(v if isinstance(v, str) else (v or [""])[0]).split(".")[0] + ".py"
                                    for v in names}))
        return (f"{where}: config.json names the repository's own code ({modules}); Nibble loads it with "
                f"transformers' {model_type} code instead, and never runs or copies the repository's code")
    return None


def check_folder_config(folder: Path, label: str) -> None:
    """:func:`check_config` for a local model folder, its note logged once a process (``nibble: note:``)."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        return
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NibbleError(f"{cfg} is not valid JSON ({exc}); download the model again") from None
    if isinstance(config, dict) and (config.get("quantization_config") or {}).get("quant_method") == "awq" \
            and not config.get("model_type"):
        return  # an AWQ folder without model_type: its own reader says what is wrong
    note = check_config(config, label)
    if note and str(folder) not in _noted:
        _noted.add(str(folder))
        log.warning(note)


def weights_complete(folder: Path) -> bool:
    index = folder / INDEX_FILE
    if index.exists():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError):
            return False
        return bool(shards) and all((folder / s).exists() for s in shards)
    return any(p.exists() for p in folder.glob("*.safetensors")) or any(folder.glob("*.gguf"))


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of a model in the local cache, or None."""
    from huggingface_hub import constants  # the Hub client on use: 0.2 s of every command's start otherwise
    from huggingface_hub.file_download import repo_folder_name

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
        if not weights_complete(folder):
            raise NibbleError(f"{label} is missing safetensors shards named in {INDEX_FILE}; download it again")
        check_folder_config(folder, label)
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
        return demo_dir()
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return _resolve_folder(path.resolve(), str(path))
        if path.suffix.lower() == ".gguf":
            return path.resolve()
        raise NibbleError(f"{path} is not a model: give a folder with config.json and .safetensors, or a .gguf file")
    if looks_like_repo_id(text):
        repo_id, _, revision = text.partition("@")
        snap = cached_snapshot(repo_id, revision or None)
        if snap is not None:
            if not weights_complete(snap):
                raise NibbleError(f"{repo_id} is only partly downloaded; run `nibble download {repo_id}` to finish it")
            return _resolve_folder(snap, repo_id)
        raise NibbleError(
            f"'{text}' is not a local folder, a .gguf file or a downloaded model; "
            f"download it first: nibble download {repo_id}"
        )
    raise NibbleError(f"no such file or folder: {path}")


def cache_dir() -> Path:
    """The Hugging Face cache folder models are downloaded to (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def demo_dir() -> Path:
    """The folder of the demo model Nibble ships."""
    if not DEMO_DIR.is_dir():
        raise NibbleError("the demo model is not part of this Nibble build; give a model folder or Hub id")
    return DEMO_DIR


def resolve_model_path(spec: str | os.PathLike) -> Path:
    """Like :func:`resolve_model`, but an existing local path is returned as it is (the caller reads and
    checks it), so each reader can say precisely what the folder or file lacks."""
    if str(spec).strip() == "demo":
        return demo_dir()
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir():
            check_folder_config(path, str(path))
        return path
    if "/" in str(spec) and not str(spec).startswith((".", "/")) and looks_like_repo_id(str(spec).strip()):
        return resolve_model(spec)
    raise NibbleError(f"{spec}: no such file or folder; give a Hugging Face model folder or a .gguf file")


# What a model path holds. "original" is an unquantized Hugging Face folder (the reference every
# quantization is measured against); the same three words name models in the runtime, the library and the app.
ORIGINAL, GGUF, AWQ = "original", "gguf", "awq"
MODEL_KINDS = (ORIGINAL, GGUF, AWQ)


def model_kind(path: Path) -> str:
    """'original', 'gguf' or 'awq' for an existing path, or a NibbleError saying why it is none of them."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"GGUF":
            return GGUF
        raise NibbleError(f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf file or a "
                          "Hugging Face model folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise NibbleError(f"{path} is a folder without config.json; pass a Hugging Face model folder or a .gguf file")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError:
        raise NibbleError(f"{cfg_path} is not valid JSON") from None
    qc = cfg.get("quantization_config") or {}
    method = str(qc.get("quant_method", "")).lower() if isinstance(qc, dict) else ""
    if method == "awq":
        return AWQ
    if method:
        raise NibbleError(f"{path} is quantized with {method!r}, which Nibble does not run; use the original "
                          "model, a GGUF or an AWQ checkpoint")
    return ORIGINAL
