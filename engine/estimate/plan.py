"""The model plan: everything the estimate needs, read once from headers.

A :class:`ModelPlan` holds the hyperparameters that size the KV cache and compute buffers and the list of
tensors the GGUF quantizer will see (GGUF names, GGUF shapes, the type each has in the intermediate GGUF).
It is built from a Hugging Face folder (config.json + safetensors headers), a GGUF file (headers only) or a
Hub model id (safetensors headers fetched by huggingface_hub, no weights downloaded). Building it is the slow
part; every estimate after that is arithmetic on it.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from engine.core.errors import NibbleError
from engine.estimate.metadata import kv_section_bytes, predict_metadata_bytes
from engine.models import families

_BLOCK = re.compile(r"blk\.(\d+)\.")
_SAFETENSORS_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F32"}


@dataclass(frozen=True)
class PlanTensor:
    """One tensor as the quantizer sees it.

    ``ne`` is in GGUF order: ``ne[0]`` is the row length (the HF shape reversed). ``src_type`` is the
    ggml type name it has in the GGUF the quantizer reads (F32, F16, BF16, or already quantized).
    """

    name: str
    ne: tuple[int, ...]
    src_type: str

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def n_dims(self) -> int:
        """Dimensions as ggml counts them: trailing dimensions of 1 do not count."""
        n = len(self.ne)
        while n > 1 and self.ne[n - 1] == 1:
            n -= 1
        return n

    @property
    def layer(self) -> int:
        """Block index for ``blk.N.*`` tensors, -1 for the rest (embeddings, output, norms)."""
        m = _BLOCK.match(self.name)
        return int(m.group(1)) if m else -1


@dataclass
class ModelPlan:
    """What a model is, for sizing: hyperparameters plus the GGUF tensor list.

    Attributes:
        source: the path or Hub id the plan was read from; ``source_kind`` is "folder", "gguf" or "hub".
        arch: GGUF architecture name (``llama``, ``qwen2``, ``gemma2``...).
        n_layer, n_embd, n_head, n_head_kv, head_dim_k, head_dim_v, n_ff, n_vocab, n_ctx_train:
            the transformer's shape; per-layer head counts are taken as uniform.
        n_expert, n_expert_used: mixture-of-experts counts (0 for dense models).
        sliding_window: window length of sliding-window layers (0 if none); ``swa_layers`` flags them.
        recurrent_layers: layers with a recurrent state, no KV cache; ``ssm_shape`` the state's llama.cpp keys.
        is_70b_class: llama.cpp's "70B" size class, which gives attn_v more bits in some mixtures.
        tensors: the tensors in the order the quantizer processes them.
        metadata_bytes: size of the GGUF key/value section; ``metadata_exact`` says whether it was read
            from a GGUF header (exact) or predicted from the tokenizer files (estimated).
        source_bytes: bytes of weights at the source (safetensors or GGUF data); ``source_dtype`` their type.
    """

    source: str
    source_kind: str
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    tensors: tuple[PlanTensor, ...]
    metadata_bytes: int
    metadata_exact: bool
    source_bytes: int
    source_dtype: str = "BF16"
    n_expert: int = 0
    n_expert_used: int = 0
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    recurrent_layers: tuple[bool, ...] = ()
    ssm_shape: tuple[int, int, int, int] = (0, 0, 0, 0)
    is_70b_class: bool = False
    name: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


# --------------------------------------------------------------------------------------------------
# entry point


def load_plan(model: str | os.PathLike) -> ModelPlan:
    """Read a model's headers once: a local folder, a ``.gguf`` file, or a Hub id (``owner/name``)."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if text == "demo":
        from engine.models.demo import DEMO_DIR

        path = DEMO_DIR
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise NibbleError(f"{path}: not a GGUF file; give a .gguf file, a model folder or a Hub model id")
        return plan_from_gguf(path)
    if path.is_dir():
        from engine.models.resolve import check_folder_config

        check_folder_config(path, str(path))  # the one policy on repository code
        return plan_from_folder(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        return plan_from_hub(text)
    raise NibbleError(f"{text}: no such file or folder, and not a Hub model id (owner/name)")


# --------------------------------------------------------------------------------------------------
# Hugging Face checkpoints (folder or Hub)


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {"dtype", "shape"} from one safetensors file, reading only its header."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise NibbleError(f"{path}: not a readable safetensors file ({exc}); re-download it") from exc
    header.pop("__metadata__", None)
    return header


def plan_from_folder(folder: Path) -> ModelPlan:
    """Plan for a Hugging Face model folder: config.json plus safetensors headers (no weights read).

    The tensor list and the key/value section come from Nibble's converter itself (its tensor plan and
    its metadata writer run on a header-only file), so the size matches what ``nibble quantize`` writes.
    """
    try:
        return _plan_via_converter(folder)
    except Exception:  # no tokenizer yet, or a family the converter does not plan: read headers ourselves
        pass
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise NibbleError(f"{folder}: no config.json; give a Hugging Face model folder or a .gguf file")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise NibbleError(f"{config_path}: not valid JSON ({exc})") from exc
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise NibbleError(f"{folder}: no .safetensors files; Nibble reads safetensors checkpoints only")
    tensors: dict[str, dict] = {}
    source_bytes = 0
    for f in files:
        tensors.update(read_safetensors_header(f))
        source_bytes += f.stat().st_size
    meta_bytes = predict_metadata_bytes(config, folder.name, _read_json(folder / "tokenizer.json"),
                                         _read_json(folder / "tokenizer_config.json"))
    return plan_from_hf(config, tensors, source=str(folder), source_kind="folder",
                        source_bytes=source_bytes, metadata_bytes=meta_bytes, name=folder.name)


def _plan_via_converter(folder: Path) -> ModelPlan:
    import tempfile

    from engine.gguf.convert import plan_tensors, write_metadata
    from engine.models.source import open_source

    src = open_source(folder)
    planned = plan_tensors(src)
    with tempfile.TemporaryDirectory() as d:
        head = Path(d) / "header.gguf"
        w = gguf.GGUFWriter(os.fspath(head), src.gguf_architecture)
        write_metadata(w, src, planned)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.close()
        kv_bytes = kv_section_bytes(gguf.GGUFReader(head, "r"))
    base = plan_from_hf(src.config, {n: {"dtype": i.dtype, "shape": list(i.shape)} for n, i in src.tensors.items()},
                        source=str(folder), source_kind="folder", source_bytes=src.total_bytes, metadata_bytes=0,
                        name=folder.name)
    base.metadata_bytes = kv_bytes
    base.metadata_exact = True
    return base


def plan_from_hub(repo_id: str) -> ModelPlan:
    """Plan for a Hub model: config.json (one small download) and safetensors headers (range requests)."""
    try:
        from huggingface_hub import get_safetensors_metadata
        from huggingface_hub.errors import HfHubHTTPError, NotASafetensorsRepoError
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise NibbleError("huggingface_hub is not installed; pip install huggingface-hub") from exc
    from engine.hub.api import fetch_json
    from engine.hub.common import check_repo_id, hub_errors, require_online

    check_repo_id(repo_id)
    require_online()
    try:
        with hub_errors(repo_id):
            try:
                config = fetch_json(repo_id, "config.json", None, None)
                meta = get_safetensors_metadata(repo_id)
            except HfHubHTTPError as exc:
                raise NibbleError(f"{repo_id}: could not read it from the Hub ({str(exc).splitlines()[0]}); "
                                  "check the id, your network or HF_TOKEN") from None
    except NotASafetensorsRepoError as exc:
        raise NibbleError(f"{repo_id}: has no safetensors weights on the Hub; Nibble reads safetensors only") from exc
    tensors: dict[str, dict] = {}
    source_bytes = 0
    for fmeta in meta.files_metadata.values():
        for name, info in fmeta.tensors.items():
            tensors[name] = {"dtype": info.dtype, "shape": list(info.shape)}
            source_bytes += info.data_offsets[1] - info.data_offsets[0]
    tok = tok_cfg = None
    for fname in ("tokenizer.json", "tokenizer_config.json"):
        try:
            data = fetch_json(repo_id, fname, None, None)
        except Exception:  # the tokenizer only refines the metadata size; a missing one is fine
            data = None
        if fname == "tokenizer.json":
            tok = data
        else:
            tok_cfg = data
    meta_bytes = predict_metadata_bytes(config, repo_id.split("/")[-1], tok, tok_cfg)
    return plan_from_hf(config, tensors, source=repo_id, source_kind="hub", source_bytes=source_bytes,
                        metadata_bytes=meta_bytes, name=repo_id.split("/")[-1])


def plan_from_hf(config: dict, st_tensors: dict[str, dict], *, source: str, source_kind: str,
                 source_bytes: int, metadata_bytes: int, name: str = "") -> ModelPlan:
    """Build a plan from a parsed config.json and the safetensors tensor table (name -> dtype, shape).

    The tensor list is the one the model's family plans for the converter, so a Hub model is sized
    exactly as the file ``nibble quantize`` will write.
    """
    where = f"{source}/config.json" if source_kind == "folder" else f"{source}: config.json"
    fam = families.for_config(config, where)
    cfg = fam.config(config)
    hp = fam.hparams(cfg, where)
    table = {n: (tuple(int(d) for d in i["shape"]), str(i["dtype"])) for n, i in st_tensors.items()}
    planned = fam.plan_tensors(config, table, where)
    out = [PlanTensor(t.gguf_name, tuple(reversed(t.shape)), t.ggml_type.name) for t in planned]
    if not out:
        raise NibbleError(f"{source}: no tensor names matched the {fam.name} layout; is this a base checkpoint?")
    dtypes: dict[str, int] = {}
    for _, dtype in table.values():
        d = _SAFETENSORS_DTYPES.get(dtype, "F16")
        dtypes[d] = dtypes.get(d, 0) + 1
    arch_name = gguf.MODEL_ARCH_NAMES[fam.gguf_arch]
    swa = fam.swa_layers(cfg, hp)
    window = hp.sliding_window if any(swa) else 0
    return ModelPlan(
        source=source, source_kind=source_kind, arch=arch_name, name=name,
        n_layer=hp.n_layer, n_embd=hp.n_embd, n_head=hp.n_head, n_head_kv=hp.n_head_kv,
        head_dim_k=hp.head_dim, head_dim_v=hp.head_dim, n_ff=hp.n_ff, n_vocab=hp.n_vocab or _vocab_rows(out),
        n_ctx_train=hp.n_ctx_train, n_expert=hp.n_expert, n_expert_used=hp.n_expert_used,
        sliding_window=window, swa_layers=swa if window else (), recurrent_layers=fam.recurrent_layers(cfg, hp),
        ssm_shape=fam.ssm_shape(cfg) or (0, 0, 0, 0),
        is_70b_class=_is_70b_class(arch_name, hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_expert),
        tensors=tuple(sort_tensors(out)), metadata_bytes=metadata_bytes, metadata_exact=False,
        source_bytes=source_bytes, source_dtype=max(dtypes, key=dtypes.get) if dtypes else "F16",
    )


def _vocab_rows(tensors: list[PlanTensor]) -> int:
    emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
    return emb.ne[1] if emb else 0


def _is_70b_class(arch: str, n_layer: int, n_head: int, n_head_kv: int, n_expert: int) -> bool:
    if arch == "llama":
        return n_expert != 8 and n_layer == 80 and n_head != n_head_kv
    return (arch in ("qwen2", "deci", "olmo") and n_layer == 80) or (arch == "jais2" and n_layer == 68)


def sort_tensors(tensors: list[PlanTensor]) -> list[PlanTensor]:
    """The quantizer's processing order: non-block tensors first, then by block number, then by name."""
    return sorted(tensors, key=lambda t: (t.layer, t.name))


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# GGUF files


def plan_from_gguf(path: Path) -> ModelPlan:
    """Plan for a GGUF file, from its header; the key/value size is exact."""
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:
        raise NibbleError(f"{path}: not a readable GGUF file ({exc})") from exc

    def field(key, default=None):
        f = reader.fields.get(key)
        if f is None or not f.types:
            return default
        v = f.contents()
        return v

    arch = field("general.architecture")
    if not arch:
        raise NibbleError(f"{path}: GGUF has no general.architecture key")

    def hp(key, default=0):
        v = field(f"{arch}.{key}", default)
        if isinstance(v, list):  # per-layer arrays: take the first layer
            v = v[0] if v else default
        return int(v) if v is not None else default

    n_layer = hp("block_count")
    n_embd = hp("embedding_length")
    n_head = hp("attention.head_count")
    n_head_kv = hp("attention.head_count_kv", n_head) or n_head
    head_k = hp("attention.key_length", n_embd // max(n_head, 1))
    head_v = hp("attention.value_length", head_k)
    n_expert = hp("expert_count")

    tensors = []
    dtypes: dict[str, int] = {}
    for t in reader.tensors:
        tname = t.tensor_type.name
        ne = tuple(int(d) for d in t.shape)  # the reader gives ne order (ne[0] first)
        tensors.append(PlanTensor(t.name, ne, tname))
        if len(ne) >= 2:
            dtypes[tname] = dtypes.get(tname, 0) + 1
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_vocab = hp("vocab_size") or (len(tokens.data) if tokens is not None else 0)
    if not n_vocab:
        emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
        n_vocab = emb.ne[1] if emb else 0

    window = hp("attention.sliding_window")
    swa: tuple[bool, ...] = ()
    fam = families.for_gguf_arch(arch)
    if window and fam is not None and fam.swa_period:
        swa = fam.swa_pattern(n_layer)
    else:
        window = 0

    recurrent, interval = field(f"{arch}.attention.recurrent_layers"), field(f"{arch}.full_attention_interval")
    if recurrent is None and interval:  # llama.cpp's default: every interval-th layer full attention
        recurrent = [(il + 1) % int(interval) != 0 for il in range(n_layer)]
    kv_bytes = kv_section_bytes(reader)
    data_bytes = path.stat().st_size - reader.data_offset
    return ModelPlan(
        source=str(path), source_kind="gguf", arch=arch, name=str(field("general.name", path.stem)),
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim_k=head_k,
        head_dim_v=head_v, n_ff=hp("feed_forward_length"), n_vocab=n_vocab,
        n_ctx_train=hp("context_length", 4096), n_expert=n_expert, n_expert_used=hp("expert_used_count"),
        sliding_window=window, swa_layers=swa, recurrent_layers=tuple(bool(r) for r in recurrent or ()),
        ssm_shape=tuple(hp(f"ssm.{k}") for k in ("conv_kernel", "inner_size", "group_count", "state_size")),
        is_70b_class=_is_70b_class(arch, n_layer, n_head, n_head_kv, n_expert),
        tensors=tuple(sort_tensors(tensors)), metadata_bytes=kv_bytes, metadata_exact=True,
        source_bytes=data_bytes, source_dtype=max(dtypes, key=dtypes.get) if dtypes else "F16",
    )
