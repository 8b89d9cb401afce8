"""A Hugging Face model folder, read from its headers: config, tokenizer files, safetensors index.

Tensors are read one at a time straight from the safetensors files (memory-mapped), so memory stays
bounded by the largest tensor whatever the model's size.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.errors import NibbleError
from engine.models import families
from engine.models.resolve import resolve_model_path

SAFETENSORS_DTYPES = {
    "BF16": (np.uint16, 2),  # bfloat16 kept as raw 16-bit words
    "F16": (np.float16, 2),
    "F32": (np.float32, 4),
    "F64": (np.float64, 8),
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file, and what it is."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype: BF16, F16, F32, ...
    file: Path
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class SourceModel:
    path: Path
    config: dict
    tensors: dict[str, TensorInfo]
    files: list[Path] = field(default_factory=list)

    @property
    def hf_architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else str(self.config.get("model_type", "unknown"))

    @property
    def family(self):
        """The registered family of this model (a NibbleError naming config.json if there is none)."""
        return families.for_config(self.config, str(self.path / "config.json"))

    @property
    def supported(self) -> bool:
        return families.find(self.config) is not None

    @property
    def gguf_architecture(self) -> str:
        import gguf

        return gguf.MODEL_ARCH_NAMES[self.family.gguf_arch]

    @property
    def text_config(self) -> dict:
        """The language model's settings as its family reads them (text_config merged, defaults under)."""
        fam = families.find(self.config)
        return fam.config(self.config) if fam else self.config

    @property
    def table(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Tensor name -> (shape, safetensors dtype), what a family plans GGUF tensors from."""
        return {n: (t.shape, t.dtype) for n, t in self.tensors.items()}

    @property
    def param_count(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def has_file(self, name: str) -> bool:
        return (self.path / name).is_file()

    @property
    def tokenizer_kind(self) -> str:
        """'bpe', 'sentencepiece', or another tokenizer.json model type; 'none' if no tokenizer."""
        tj = self.path / "tokenizer.json"
        if tj.is_file():
            try:
                with open(tj, encoding="utf-8") as f:
                    model_type = json.load(f).get("model", {}).get("type", "")
            except (OSError, ValueError) as exc:
                raise NibbleError(f"{tj} is not valid JSON ({exc}); download the tokenizer again") from exc
            if model_type == "BPE":
                # A SentencePiece model converted to tokenizer.json keeps a tokenizer.model beside it.
                if _is_sentencepiece_bpe(tj):
                    return "sentencepiece" if self.has_file("tokenizer.model") else "sentencepiece-json"
                return "bpe"
            return model_type.lower() or "unknown"
        if self.has_file("tokenizer.model"):
            return "sentencepiece"
        return "none"

    def chat_template(self) -> str | None:
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        tc = self.path / "tokenizer_config.json"
        if tc.is_file():
            tmpl = json.loads(tc.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(tmpl, list):  # named templates: take the default one
                for t in tmpl:
                    if t.get("name") == "default":
                        return t.get("template")
                return tmpl[0].get("template") if tmpl else None
            return tmpl
        return None

    def read_raw(self, name: str) -> np.ndarray:
        """The tensor in its stored dtype (BF16 as uint16 words), read into memory.

        A plain read rather than a memory map: mapped pages of a multi-gigabyte file would stay
        resident and count against the process, while this keeps memory at one tensor.
        """
        info = self.tensors[name]
        np_dtype, _ = SAFETENSORS_DTYPES[info.dtype]
        arr = np.empty(info.nbytes // np.dtype(np_dtype).itemsize, dtype=np_dtype)
        with open(info.file, "rb", buffering=0) as f:
            f.seek(info.offset)
            view = memoryview(arr.view(np.uint8))
            got = 0
            while got < info.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise NibbleError(f"{info.file} ended early while reading {name}; download it again")
                got += n
        return arr.reshape(info.shape)

    def read_f32(self, name: str) -> np.ndarray:
        info = self.tensors[name]
        raw = self.read_raw(name)
        if info.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)



def non_finite_error(file: Path, name: str) -> NibbleError:
    """The one message for weights holding NaN or infinity: quantizing them gives nonsense or fails natively."""
    return NibbleError(f"{Path(file).name}: tensor {name} holds NaN or infinite values, so the weights are damaged; "
                       "download the model again or use an intact copy")


def check_finite(data: np.ndarray, stored_dtype: str, file: Path, name: str) -> None:
    """Refuse a tensor with NaN or infinite values (``data`` as :meth:`SourceModel.read_raw` returns it)."""
    if stored_dtype == "BF16" and data.dtype == np.uint16:
        bad = bool(np.any((data & 0x7F80) == 0x7F80))
    else:
        bad = not bool(np.isfinite(data).all())
    if bad:
        raise non_finite_error(file, name)


def _is_sentencepiece_bpe(tokenizer_json: Path) -> bool:
    """True when a BPE tokenizer.json is a SentencePiece model in disguise (▁ for spaces, byte fallback)."""
    with open(tokenizer_json, encoding="utf-8") as f:
        tj = json.load(f)
    model = tj.get("model", {})
    blob = json.dumps([tj.get("normalizer"), tj.get("pre_tokenizer")], ensure_ascii=False)
    return bool(model.get("byte_fallback")) and ("▁" in blob or "Metaspace" in blob)


def read_safetensors_header(file: Path) -> dict[str, TensorInfo]:
    """Parse one safetensors header (8-byte length + JSON) and check every tensor lies inside the file."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise NibbleError(f"{file} is truncated (only {size} bytes); download it again")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise NibbleError(f"{file} is not a valid safetensors file (header length {n}); download it again")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NibbleError(f"{file} is corrupt: its safetensors header is not valid JSON; download it again") from exc
    except OSError as exc:
        raise NibbleError(f"cannot read {file}: {exc.strerror}") from exc
    data_start = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = meta.get("dtype")
        begin, end = meta["data_offsets"]
        if data_start + end > size:
            raise NibbleError(
                f"{file} is truncated: tensor {name} needs {data_start + end} bytes but the file has {size}; "
                "download it again"
            )
        out[name] = TensorInfo(name, tuple(meta["shape"]), dtype, file, data_start + begin, end - begin)
    return out


def _safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as exc:
            raise NibbleError(f"{index} is corrupt (no weight_map); download it again") from exc
        files = sorted({path / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise NibbleError(
                f"{path}: shard(s) {', '.join(missing[:3])} listed in model.safetensors.index.json are missing; "
                "download the whole model again"
            )
        return files
    return sorted(path.glob("*.safetensors"))


def open_source(spec: str | Path, *, require_supported: bool = True) -> SourceModel:
    """Open a Hugging Face model folder from its headers only (no weights are read)."""
    path = resolve_model_path(spec)
    if path.is_file():
        raise NibbleError(f"{path} is a file; give the Hugging Face model folder that holds config.json")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise NibbleError(f"{path} has no config.json; give a Hugging Face model folder (config.json, *.safetensors, tokenizer)")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise NibbleError(f"{cfg_file} is not valid JSON ({exc}); download it again") from exc
    if not isinstance(config, dict):
        raise NibbleError(f"{cfg_file} does not hold a JSON object; download it again")
    fam = families.for_config(config, str(cfg_file)) if require_supported else families.find(config)
    if "text_config" in config and "num_hidden_layers" not in config and not (fam and fam.text_of_multimodal):
        raise NibbleError(f"{cfg_file}: multimodal models are not supported; use a text-only causal language model")
    qc = config.get("quantization_config")
    if qc and require_supported:
        raise NibbleError(
            f"{cfg_file}: this checkpoint is already quantized ({qc.get('quant_method', 'unknown')}); "
            "start from the bf16/fp16/fp32 original"
        )
    files = _safetensors_files(path)
    if not files:
        others = sorted({p.suffix for p in path.iterdir() if p.suffix in (".bin", ".pt", ".gguf", ".pth")})
        extra = f" (it has {', '.join(others)} files; Nibble reads safetensors only)" if others else ""
        raise NibbleError(f"{path} has no *.safetensors weights{extra}")
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        tensors.update(read_safetensors_header(f))
    for t in tensors.values():
        if t.dtype not in SAFETENSORS_DTYPES:
            raise NibbleError(
                f"{t.file.name}: tensor {t.name} is stored as {t.dtype}; Nibble needs bf16, fp16 or fp32 weights"
            )
    return SourceModel(path=path, config=config, tensors=tensors, files=files)
