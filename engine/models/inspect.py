"""What a model is, from its headers only: architecture, size, tensors, context, tokenizer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.models.resolve import ORIGINAL


@dataclass
class TensorSummary:
    name: str
    shape: list[int]
    dtype: str


@dataclass
class ModelInfo:
    path: str
    format: str  # engine.models.resolve.MODEL_KINDS: "original" or "gguf"
    architecture: str
    parameters: int
    context_length: int
    vocab_size: int
    tokenizer: str  # bpe / sentencepiece / ...
    chat_template: bool
    layers: int
    hidden_size: int
    file_bytes: int
    file_type: str = ""  # GGUF: the quantization, e.g. Q4_K_M
    tensors: list[TensorSummary] = field(default_factory=list)
    supported: bool = True

    def to_json(self) -> dict:
        return asdict(self)


def inspect_model(spec: str | Path) -> ModelInfo:
    from engine.models.source import resolve_model_path

    path = resolve_model_path(spec)
    if path.is_file():
        return inspect_gguf(path)
    return inspect_hf(path)


def inspect_hf(path: Path) -> ModelInfo:
    from engine.models.source import open_source

    src = open_source(path, require_supported=False)
    cfg = src.text_config
    tensors = [TensorSummary(t.name, list(t.shape), t.dtype) for t in src.tensors.values()]
    return ModelInfo(
        path=str(path), format=ORIGINAL, architecture=src.hf_architecture,
        parameters=src.param_count, context_length=int(cfg.get("max_position_embeddings", 0)),
        vocab_size=int(cfg.get("vocab_size", 0)), tokenizer=src.tokenizer_kind,
        chat_template=bool(src.chat_template()), layers=int(cfg.get("num_hidden_layers", 0)),
        hidden_size=int(cfg.get("hidden_size", 0)), file_bytes=sum(f.stat().st_size for f in src.files),
        tensors=tensors, supported=src.supported,
    )


def open_gguf(path: Path):
    """gguf.GGUFReader over ``path`` with a one-line error for files that are not (whole) GGUFs."""
    import gguf

    from engine.models.gguf_header import check_gguf_file, corrupt_gguf

    check_gguf_file(path)
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # truncated files raise ValueError/IndexError from numpy memmaps
        raise corrupt_gguf(path, exc) from exc


def gguf_field(reader, key: str, default=None):
    f = reader.get_field(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:
        return default


def file_type_name(ftype: int | None) -> str:
    if ftype is None:
        return ""
    import gguf

    try:
        return gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return str(ftype)


def inspect_gguf(path: Path) -> ModelInfo:
    reader = open_gguf(path)
    arch = gguf_field(reader, "general.architecture", "unknown")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    n_vocab = len(tokens.data) if tokens is not None else 0
    model = gguf_field(reader, "tokenizer.ggml.model", "none")
    kind = {"gpt2": "bpe", "llama": "sentencepiece"}.get(model, model)
    tensors = [
        TensorSummary(t.name, [int(x) for x in reversed(list(t.shape))], t.tensor_type.name) for t in reader.tensors
    ]
    params = sum(int(t.n_elements) for t in reader.tensors)
    return ModelInfo(
        path=str(path), format="gguf", architecture=arch, parameters=params,
        context_length=int(gguf_field(reader, f"{arch}.context_length", 0)),
        vocab_size=n_vocab, tokenizer=kind,
        chat_template=reader.get_field("tokenizer.chat_template") is not None,
        layers=int(gguf_field(reader, f"{arch}.block_count", 0)),
        hidden_size=int(gguf_field(reader, f"{arch}.embedding_length", 0)),
        file_bytes=path.stat().st_size, file_type=file_type_name(gguf_field(reader, "general.file_type")),
        tensors=tensors,
    )
