"""llama.cpp's own files from llama-cpp-python's source archive, fetched from PyPI into a cache once.

``vendor_models()``: real vocabularies (ggml-vocab-*.gguf) with llama.cpp's test strings (.inp) and the
ids it expects (.out). ``reference_converter()``: convert_hf_to_gguf.py with its ``conversion`` package
and gguf-py, to check Nibble's converter against. Tests that need them skip when PyPI is unreachable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("NIBBLE_TEST_CACHE", Path.home() / ".cache" / "nibble-tests"))
VOCABS = {"llama-bpe": "ggml-vocab-llama-bpe", "qwen2": "ggml-vocab-qwen2", "llama-spm": "ggml-vocab-llama-spm",
          "phi-3": "ggml-vocab-phi-3"}


def _version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def _archive() -> Path:
    version = _version()
    sdist_dir = CACHE / "sdist"
    archive = next(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"), None) if sdist_dir.is_dir() else None
    if archive is None:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
             "-d", str(sdist_dir), f"llama-cpp-python=={version}"],
            capture_output=True, text=True, timeout=600,
        )
        archive = next(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"), None)
        if r.returncode != 0 or archive is None:
            pytest.skip(f"llama-cpp-python {version} source archive could not be fetched: {r.stderr[-200:]}")
    return archive


def vendor_models() -> Path:
    """A folder with llama.cpp's vocabulary GGUFs and their test strings."""
    target = CACHE / f"llama-cpp-python-{_version()}"
    wanted = tuple(f"/vendor/llama.cpp/models/{v}.gguf{ext}" for v in VOCABS.values() for ext in ("", ".inp", ".out"))
    if (target / "done").is_file() and all((target / Path(w).name).is_file() for w in wanted):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(_archive()) as tar:
        for m in tar.getmembers():
            if m.name.endswith(wanted):
                (target / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    (target / "done").write_text("ok")
    return target


def reference_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py, with the ``conversion`` package and gguf-py beside it."""
    target = CACHE / f"llama-cpp-python-{_version()}-convert"
    script = target / "convert_hf_to_gguf.py"
    if (target / "done").is_file():
        return script
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(_archive()) as tar:
        for m in tar.getmembers():
            rel = m.name.split("/vendor/llama.cpp/", 1)[-1] if "/vendor/llama.cpp/" in m.name else None
            if rel and m.isfile() and (rel == "convert_hf_to_gguf.py" or rel.startswith(("conversion/", "gguf-py/"))):
                out = target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(m).read())
    (target / "done").write_text("ok")
    return script


def cases(models: Path, vocab: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's test strings for ``vocab`` with the ids it expects."""
    inp = (models / f"{vocab}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    out = (models / f"{vocab}.gguf.out").read_text(encoding="utf-8")[:-1].split("\n")
    assert len(inp) == len(out)
    return [(text, [int(x) for x in ids.split()]) for text, ids in zip(inp, out)]
