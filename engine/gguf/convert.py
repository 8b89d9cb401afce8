"""Hugging Face folder → GGUF, written with the ``gguf`` package the way llama.cpp's converter writes it.

Tensor names, metadata keys and tokenizer fields match llama.cpp's ``convert_hf_to_gguf.py`` so the files
load in every llama.cpp-based tool. Tensors are streamed one at a time (memory bounded by the largest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np

from engine.core.errors import NibbleError
from engine.core.outputs import check_free_space, check_output, temp_path, write_error
from engine.gguf.files import is_gguf
from engine.gguf.vocab import write_vocab
from engine.core.progress import Reporter
from engine.models.families.tensors import PlannedTensor, materialise
from engine.models.source import SourceModel, check_finite, open_source

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
    write_vocab(writer, src.path, kind, hp.n_vocab or None)
    fam.write_vocab_extras(writer, cfg, src.path, tokenizer_config)


def _tensor_data(src: SourceModel, t: PlannedTensor) -> np.ndarray:
    """A tensor's data in its GGUF storage type: F32, or the stored 16-bit words unchanged; NaN or infinite
    values are refused, naming the tensor."""
    if t.ggml_type == gguf.GGMLQuantizationType.F32 or any(src.tensors[n].dtype == "F64" for n in t.sources):
        data = materialise(t, src.read_f32).astype(np.float32, copy=False)
    else:
        data = materialise(t, src.read_raw)
    first = src.tensors[t.sources[0]] if t.sources else None
    if first is not None:
        check_finite(data, "BF16" if data.dtype == np.uint16 else "F32", first.file, t.sources[0])
    return data


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
    check_output(out, inputs=[src.path], replaceable=is_gguf, kind="a GGUF file")
    check_free_space(out.parent, sum(t.nbytes for t in planned))
    tmp = temp_path(out, "convert")
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
        raise write_error(exc, out) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
