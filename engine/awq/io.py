"""Reading a Hugging Face folder's weights one tensor at a time and writing safetensors shards."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.core.errors import NibbleError
from engine.models.source import non_finite_error

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
WEIGHT_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class WeightReader:
    """Lazy access to the tensors of a folder's safetensors files, by name."""

    def __init__(self, model_dir: Path):
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise NibbleError(f"{model_dir}: no .safetensors weights found; Nibble reads safetensors checkpoints")
        self._handles = {}
        self._where: dict[str, Path] = {}
        self._checked: set[str] = set()
        for f in files:
            try:
                h = safe_open(str(f), framework="pt")
            except Exception as exc:  # corrupt or truncated file
                raise NibbleError(f"{f}: cannot read safetensors file ({exc}); download it again") from exc
            self._handles[f] = h
            for name in h.keys():
                self._where[name] = f

    def names(self) -> list[str]:
        return list(self._where)

    def where(self, name: str) -> Path:
        """The file holding ``name``."""
        return self._where[name]

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise NibbleError(f"weights are missing tensor {name!r}; the checkpoint is incomplete or not of this architecture")
        t = self._handles[self._where[name]].get_tensor(name)
        if name not in self._checked and t.is_floating_point():  # a tensor read again was checked the first time
            if not bool(torch.isfinite(t).all()):
                raise non_finite_error(self._where[name], name)
            self._checked.add(name)
        return t


def _os_error(exc: Exception) -> OSError:
    """safetensors' I/O failure as the OSError it stands for ("... (os error 28)")."""
    m = re.search(r"os error (\d+)", str(exc))
    return OSError(int(m.group(1)) if m else None, str(exc))


class ShardWriter:
    """Collects tensors and writes ``model-0000k-of-0000n.safetensors`` shards plus an index.

    At most ``max_shard_bytes`` are held in memory before a shard is written.
    """

    def __init__(self, folder: Path, max_shard_bytes: int = 2 << 30):
        self.folder = folder
        self.max = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        t = tensor.detach().to("cpu").contiguous()
        size = t.numel() * t.element_size()
        if self._pending and self._pending_bytes + size > self.max:
            self._flush()
        self._pending[name] = t
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.folder / f"shard-{len(self._written):05d}.tmp"
        try:
            save_file(self._pending, str(path), metadata={"format": "pt"})
        except SafetensorError as exc:  # the writer's own error type, for what the file system refused
            raise _os_error(exc) from None
        self._written.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[str]:
        if self._pending or not self._written:
            self._flush()
        n = len(self._written)
        if n == 1:
            final = ["model.safetensors"]
        else:
            final = [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
        weight_map = {}
        for (tmp, names), name in zip(self._written, final):
            tmp.rename(self.folder / name)
            weight_map.update({t: name for t in names})
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return final


#: Never copied into an output: code (a later ``trust_remote_code`` load would run it) and hidden files.
CODE_SUFFIXES = (".py", ".pyc", ".so", ".dylib", ".dll", ".sh")


def init_unsaved_buffers(model, module=None) -> None:
    """Set the buffers of ``module`` (default: all of ``model``) that no checkpoint holds (an embedding's
    scale, rotary frequencies) as the model's own initialisation sets them, on the device the module's
    weights are on; loaded tensors are left as they are."""
    for m in (module or model).modules():
        unsaved = [n for n in m._non_persistent_buffers_set if m._buffers.get(n) is not None]
        if not unsaved:
            continue
        dev = next((t.device for t in m.parameters() if not t.is_meta), None)
        for n in unsaved:
            if m._buffers[n].is_meta:
                m._buffers[n] = torch.empty_like(m._buffers[n], device=dev or "cpu")
        for t in [*m.parameters(), *(b for k, b in m.named_buffers() if k not in unsaved)]:
            t._is_hf_initialized = True
        model._init_weights(m)


def copy_side_files(src: Path, dst: Path) -> list[str]:
    """Copy tokenizer, generation and template files (everything but weights, the config and code); an
    ``auto_map`` naming the repository's code is dropped from the JSON files copied."""
    copied = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name == "config.json" or f.name in WEIGHT_INDEX_NAMES:
            continue
        if f.name.endswith(WEIGHT_SUFFIXES + CODE_SUFFIXES) or f.name.startswith("."):
            continue
        if f.suffix == ".json":
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict) and "auto_map" in data:
                data.pop("auto_map")
                (dst / f.name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                copied.append(f.name)
                continue
        shutil.copy2(f, dst / f.name)
        copied.append(f.name)
    return copied
