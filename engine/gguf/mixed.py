"""Per-tensor mixed precision: the candidate types, the recipe (tensor -> type) and the measured profile.

A *profile* is what the search needs to know about one model on one calibration text: for every weight
matrix, the predicted KL divergence (``0.5 * weighted squared error``, see ``engine.gguf.sensitivity``)
at each candidate type. Measuring it takes a gradient pass in torch and one quantization of every tensor
to every candidate; it is cached in Nibble's data folder under a key of the model's files and the text,
with the importance matrix beside it, so ``nibble estimate --target-size`` and ``nibble quantize
--target-size`` measure once between them.

A *recipe* is the chosen type of each tensor; it is saved beside the output (``NAME.recipe.json``) and
can be given again (``--recipe``) to quantize a fine-tune of the same base the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from engine.core.errors import NibbleError
from engine.core.progress import Reporter

QT = gguf.GGMLQuantizationType
# Types the search chooses from, for rows that split into 256-blocks, and for those that only split into 32.
CANDIDATES = ("Q2_K", "Q3_K", "IQ3_S", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16")
CANDIDATES_32 = ("Q4_0", "IQ4_NL", "Q5_0", "Q8_0", "F16")
RECIPE_FORMAT = "nibble-recipe"
PROFILE_VERSION = 1
# file type written in general.file_type for a mix: the one named by the type holding most bytes
_FTYPE_FOR = {"Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "IQ3_S": "IQ3_S", "IQ4_XS": "IQ4_XS", "Q4_K": "Q4_K_M",
              "Q5_K": "Q5_K_M", "Q6_K": "Q6_K", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "IQ4_NL": "IQ4_NL",
              "Q5_0": "Q5_0"}


def candidates_for(ne0: int) -> tuple[str, ...]:
    """The candidate types a tensor with rows of ``ne0`` values can take (F16 always)."""
    for group in (CANDIDATES, CANDIDATES_32):
        ok = tuple(t for t in group if ne0 % gguf.GGML_QUANT_SIZES[QT[t]][0] == 0)
        if len(ok) > 2:
            return ok
    return ("F16",)


def file_type_for(type_bytes: dict[str, int]) -> str:
    """The llama.cpp file type to record for a mix, from bytes per ggml type."""
    for name, _ in sorted(type_bytes.items(), key=lambda kv: -kv[1]):
        if name in _FTYPE_FOR:
            return _FTYPE_FOR[name]
    return "Q8_0"  # all F16: the quantizer applies per-tensor types only over a quantized file type


@dataclass
class Recipe:
    """The type of each quantized tensor, and what it was chosen for."""

    tensor_types: dict[str, str]
    file_bytes: int = 0
    target_bytes: int | None = None
    predicted_kld: float | None = None
    model: dict = field(default_factory=dict)
    calibration: str | None = None

    def to_json(self) -> dict:
        return {"format": RECIPE_FORMAT, "version": 1, "model": self.model, "target_bytes": self.target_bytes,
                "file_bytes": self.file_bytes, "predicted_kld": self.predicted_kld,
                "calibration": self.calibration, "tensor_types": self.tensor_types}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path


def recipe_path_for(out: str | Path) -> Path:
    """``model.gguf`` -> ``model.recipe.json`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".recipe.json")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NibbleError(f"recipe {path}: file not found", setting="recipe") from None
    except (OSError, ValueError) as exc:
        raise NibbleError(f"recipe {path}: not a readable recipe ({exc}); give a .recipe.json Nibble wrote",
                          setting="recipe") from None
    if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT or not isinstance(data.get("tensor_types"), dict):
        raise NibbleError(f"recipe {path}: not a Nibble recipe; give the .recipe.json written beside a mixed "
                          "quantization", setting="recipe")
    bad = sorted({t for t in data["tensor_types"].values() if t not in QT.__members__})
    if bad:
        raise NibbleError(f"recipe {path}: unknown tensor types {', '.join(bad)}", setting="recipe")
    return Recipe(tensor_types=dict(data["tensor_types"]), file_bytes=int(data.get("file_bytes") or 0),
                  target_bytes=data.get("target_bytes"), predicted_kld=data.get("predicted_kld"),
                  model=data.get("model") or {}, calibration=data.get("calibration"))


def override_patterns(tensor_types: dict[str, str]) -> list[tuple[str, int]]:
    """llama.cpp's per-tensor overrides (``tt_overrides``): one anchored pattern per tensor."""
    return [("^" + re.escape(name) + "$", int(QT[t])) for name, t in tensor_types.items()]


# ---- the profile ----------------------------------------------------------------------------------------

@dataclass
class Profile:
    """Predicted KL divergence of each tensor at each candidate type, and the importance matrix used."""

    kld: dict[str, dict[str, float]]
    imatrix: Path
    seconds: float = 0.0
    cached: bool = False


def _files_key(path: Path) -> list:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def profile_dir(model_path: Path, calibration: Path, windows: int) -> Path:
    from engine.models.library import data_dir

    h = hashlib.sha256()
    h.update(json.dumps([str(model_path.resolve()), _files_key(model_path), windows, CANDIDATES,
                         PROFILE_VERSION]).encode())
    h.update(calibration.read_bytes())
    return data_dir() / "mix-profiles" / h.hexdigest()[:24]


def load_profile(folder: Path) -> Profile | None:
    try:
        data = json.loads((folder / "profile.json").read_text(encoding="utf-8"))
        if data.get("version") == PROFILE_VERSION and (folder / "imatrix.gguf").is_file():
            return Profile(kld=data["kld"], imatrix=folder / "imatrix.gguf", seconds=data.get("seconds", 0.0),
                           cached=True)
    except (OSError, ValueError, KeyError):
        pass
    return None


def _fill_missing(pairs: dict, names) -> None:
    """Tensors the gradient pass did not reach get the median sensitivity of those it did."""
    import numpy as np

    scales = [float(np.mean(r if r is not None else 1.0) * np.mean(c if c is not None else 1.0))
              for plist in pairs.values() for r, c in plist]
    median = float(np.median(scales)) if scales else 1.0
    for name in names:
        if name not in pairs:
            pairs[name] = [(None, np.array([median]))]


def measure_profile(model_path: Path, intermediate: Path, calibration: Path, candidates: dict[str, tuple[str, ...]],
                    *, windows: int = 16, threads: int | None = None, reporter: Reporter | None = None) -> Profile:
    """Measure (or read from the cache) the profile of the model in ``model_path``, whose unquantized GGUF
    is ``intermediate``, on ``calibration``: the gradient pass here, the importance matrix and the
    quantization errors in llama.cpp's worker process."""
    import time

    from engine.gguf.quantize import _run_worker
    from engine.gguf.sensitivity import measure_sensitivity, save_pairs

    reporter = reporter or Reporter()
    folder = profile_dir(model_path, calibration, windows)
    hit = load_profile(folder)
    if hit is not None:
        return hit
    started = time.perf_counter()
    text = calibration.read_text(encoding="utf-8", errors="replace")
    pairs = measure_sensitivity(model_path, text, windows=windows, reporter=reporter)
    _fill_missing(pairs, candidates)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        pairs_file = Path(tmp) / "pairs.npz"
        save_pairs(pairs, pairs_file)
        res = _run_worker({"kind": "profile", "input": os.path.abspath(intermediate),
                           "calibration_file": os.path.abspath(calibration),
                           "calibration_name": calibration.name, "threads": threads,
                           "save_imatrix": os.path.abspath(Path(tmp) / "imatrix.gguf"),
                           "pairs_file": os.path.abspath(pairs_file),
                           "candidates": {k: list(v) for k, v in candidates.items()}}, reporter)
        kld = {name: {t: 0.5 * e for t, e in errs.items()} for name, errs in res["errors"].items()}
        seconds = time.perf_counter() - started
        os.replace(Path(tmp) / "imatrix.gguf", folder / "imatrix.gguf")
        (folder / "profile.json").write_text(json.dumps({"version": PROFILE_VERSION, "kld": kld, "seconds": seconds,
                                                         "model": str(model_path), "calibration": str(calibration)}),
                                             encoding="utf-8")
    return Profile(kld=kld, imatrix=folder / "imatrix.gguf", seconds=seconds)
