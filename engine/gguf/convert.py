"""Hugging Face folder → GGUF, written with the ``gguf`` package the way llama.cpp's converter writes it.

Tensor names, metadata keys and tokenizer fields match llama.cpp's ``convert_hf_to_gguf.py`` so the files
load in every llama.cpp-based tool. Tensors are streamed one at a time (memory bounded by the largest).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np

from engine.core.errors import NibbleError
from engine.gguf.vocab import write_vocab
from engine.core.progress import Reporter
from engine.models.families.tensors import PlannedTensor, materialise
from engine.models.source import SourceModel, open_source

_FILE_TYPE = {
    gguf.GGMLQuantizationType.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
    gguf.GGMLQuantizationType.F32: gguf.LlamaFileType.ALL_F32,
}


def plan_tensors(src: SourceModel) -> list[PlannedTensor]:
    """The GGUF tensors of a source model, as its family plans them."""
    return src.family.plan_tensors(src.config, src.table, str(src.path / "config.json"))


def _intermediate_file_type(planned: list[PlannedTensor]) -> gguf.LlamaFileType:
    types = {t.ggml_type for t in planned if len(t.shape) > 1}
    for t in (gguf.GGMLQuantizationType.BF16, gguf.GGMLQuantizationType.F16):
        if t in types:
            return _FILE_TYPE[t]
    return gguf.LlamaFileType.ALL_F32


def write_metadata(writer: gguf.GGUFWriter, src: SourceModel, planned: list[PlannedTensor]) -> None:
    """General keys, the family's hyperparameters and the tokenizer, as llama.cpp's converter writes them."""
    fam = src.family
    cfg = fam.config(src.config)
    hp = fam.hparams(cfg, str(src.path / "config.json"))
    name = src.config.get("_name_or_path") or src.path.name
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(str(name)).name or "model")
    fam.write_hparams(writer, cfg, hp)
    writer.add_file_type(_intermediate_file_type(planned))
    tc_path = src.path / "tokenizer_config.json"
    try:
        tokenizer_config = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}
    except ValueError as exc:
        raise NibbleError(f"{tc_path} is not valid JSON ({exc}); download it again") from exc
    kind = fam.tokenizer_kind(src.tokenizer_kind, tokenizer_config)
    write_vocab(writer, src.path, kind, hp.n_vocab or None, pre_names=fam.bpe_pre, special_tokens=fam.special_tokens)
    fam.write_vocab_extras(writer, cfg, src.path, tokenizer_config)


def _tensor_data(src: SourceModel, t: PlannedTensor) -> np.ndarray:
    """A tensor's data in its GGUF storage type: F32, or the stored 16-bit words unchanged."""
    if t.ggml_type == gguf.GGMLQuantizationType.F32 or any(src.tensors[n].dtype == "F64" for n in t.sources):
        return materialise(t, src.read_f32).astype(np.float32, copy=False)
    return materialise(t, src.read_raw)


def temp_path_for(out: Path, tag: str) -> Path:
    """A temporary name in the output's folder, so the final rename is atomic and cleanup is easy."""
    return out.with_name(f".{out.name}.{tag}.{os.getpid()}.tmp")


def check_output_folder(out: Path, need_bytes: int = 0) -> None:
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise NibbleError(f"output folder {folder} does not exist; create it or choose another --out")
    if not os.access(folder, os.W_OK):
        raise NibbleError(f"output folder {folder} is not writable; choose another --out")
    if need_bytes:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise NibbleError(
                f"not enough disk space in {folder}: {need_bytes / 2**30:.2f} GiB needed, {free / 2**30:.2f} GiB free; "
                "free some space or choose another --out"
            )


def convert_to_gguf(
    source: str | Path | SourceModel,
    out_path: str | Path,
    *,
    reporter: Reporter | None = None,
) -> Path:
    """Write ``source`` as an unquantized GGUF (weights in their stored precision, norms in F32)."""
    reporter = reporter or Reporter()
    src = source if isinstance(source, SourceModel) else open_source(source)
    out = Path(out_path)
    planned = plan_tensors(src)
    check_output_folder(out, sum(t.nbytes for t in planned))
    tmp = temp_path_for(out, "convert")
    try:
        writer = gguf.GGUFWriter(tmp, src.gguf_architecture)
        write_metadata(writer, src, planned)
        for t in planned:
            raw_shape = t.shape
            nbytes = t.nbytes
            np_dtype = np.float32 if t.ggml_type == gguf.GGMLQuantizationType.F32 else (
                np.float16 if t.ggml_type == gguf.GGMLQuantizationType.F16 else np.uint16
            )
            raw = None if np_dtype is not np.uint16 else gguf.GGMLQuantizationType.BF16
            writer.add_tensor_info(t.gguf_name, raw_shape, np.dtype(np_dtype), nbytes, raw_dtype=raw)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = len(planned)
        for i, t in enumerate(planned, 1):
            reporter.check_cancel()
            writer.write_tensor_data(_tensor_data(src, t))
            reporter.progress(i, total, f"{t.gguf_name} -> {t.ggml_type.name}", stage="convert")
        writer.close()
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise NibbleError(f"disk full while writing {out}; free some space in {out.parent} and try again") from exc
        raise NibbleError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
