"""Handing a GGUF file to the other local-model apps people use: Ollama and LM Studio.

- Ollama imports a model from a Modelfile: ``FROM`` the GGUF, its chat template written in Go's template
  language (Ollama does not run Jinja), the stop tokens, then ``ollama create NAME -f Modelfile`` when Ollama
  is installed. The template is translated for the chat formats Nibble recognises (ChatML, Llama 3, Gemma,
  Mistral, Phi-3); for others the Modelfile says so and Ollama falls back to what it detects in the file.
- LM Studio lists models from its models folder laid out as ``PUBLISHER/MODEL/FILE.gguf``: the file is linked
  there (a hard link where the disk allows, else copied), never moved.

Both say in one line what they did; neither changes the GGUF.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import NibbleError
from engine.models.inspect import gguf_field, open_gguf

# Go templates for Ollama, by the markers of a chat format in the model's Jinja template.
_CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
           "<|im_start|>assistant\n")
_FORMATS = (
    ("ChatML", "<|im_start|>", _CHATML, ("<|im_end|>", "<|im_start|>")),
    ("Llama 3", "<|start_header_id|>",
     "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
     "<|start_header_id|>assistant<|end_header_id|>\n\n", ("<|eot_id|>", "<|start_header_id|>")),
    ("Gemma", "<start_of_turn>",
     "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
     "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n", ("<end_of_turn>",)),
    ("Phi-3", "<|user|>",
     "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n", ("<|end|>",)),
    ("Mistral", "[INST]",
     "{{- range .Messages }}{{ if eq .Role \"user\" }}[INST] {{ .Content }} [/INST]{{ else if eq .Role "
     "\"assistant\" }}{{ .Content }}</s>{{ end }}{{ end }}", ("[INST]", "</s>")),
)


@dataclass(frozen=True)
class Handoff:
    message: str  # one line: what was done
    path: Path  # the Modelfile, or the file in LM Studio's folder
    command: str = ""  # what the user can run (or what was run)


def _check_gguf(path: Path):
    if not path.is_file():
        raise NibbleError(f"{path}: no such file; give a .gguf file")
    return open_gguf(path)


def modelfile_text(gguf_path: str | os.PathLike) -> tuple[str, str | None]:
    """The Modelfile for ``gguf_path`` and the chat format recognised (None: left to Ollama)."""
    path = Path(gguf_path).expanduser().resolve()
    reader = _check_gguf(path)
    template = str(gguf_field(reader, "tokenizer.chat_template", "") or "")
    lines = [f"FROM {path}"]
    for name, marker, go_template, stops in _FORMATS:
        if marker in template:
            lines.append(f'TEMPLATE """{go_template}"""')
            lines += [f'PARAMETER stop "{s}"' for s in stops]
            return "\n".join(lines) + "\n", name
    lines.append("# Nibble did not recognise this model's chat template; Ollama uses the one it detects in the file.")
    return "\n".join(lines) + "\n", None


def ollama_name(gguf_path: Path) -> str:
    """A model name Ollama accepts, from the file name."""
    return re.sub(r"[^a-z0-9._-]+", "-", gguf_path.stem.lower()).strip("-.") or "model"


def use_in_ollama(gguf_path: str | os.PathLike, name: str | None = None, *, run: bool = True) -> Handoff:
    """Write ``NAME.Modelfile`` beside the GGUF and, if Ollama is installed and ``run``, import it."""
    path = Path(gguf_path).expanduser().resolve()
    text, fmt = modelfile_text(path)
    name = name or ollama_name(path)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._:/-]*", name):
        raise NibbleError(f"'{name}' is not a name Ollama accepts; use lower-case letters, digits, '.', '_' and '-'")
    modelfile = path.with_name(f"{path.stem}.Modelfile")
    tmp = modelfile.with_name(f".{modelfile.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, modelfile)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NibbleError(f"cannot write {modelfile} ({exc.strerror}); choose a folder you can write to") from None
    command = f"ollama create {name} -f {modelfile}"
    note = f" with its {fmt} chat template" if fmt else " (chat template left to Ollama)"
    ollama = shutil.which("ollama")
    if not run or ollama is None:
        why = "" if not run else "; Ollama is not installed here, so run it once Ollama is"
        return Handoff(f"wrote {modelfile}{note}{why}: {command}", modelfile, command)
    proc = subprocess.run([ollama, "create", name, "-f", str(modelfile)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise NibbleError(f"ollama create {name} failed ({last}); the Modelfile is at {modelfile}")
    return Handoff(f"created the Ollama model {name}{note}: run it with `ollama run {name}`", modelfile, command)


def lmstudio_models_dir() -> Path:
    """LM Studio's models folder: ``LMSTUDIO_MODELS_DIR``, else ``~/.lmstudio/models`` (LM Studio 0.3 and
    later), else the older ``~/.cache/lm-studio/models`` when only that exists."""
    if os.environ.get("LMSTUDIO_MODELS_DIR"):
        return Path(os.environ["LMSTUDIO_MODELS_DIR"]).expanduser()
    new, old = Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"
    return old if old.is_dir() and not new.is_dir() else new


def use_in_lmstudio(gguf_path: str | os.PathLike, publisher: str = "nibble", model: str | None = None,
                    models_dir: str | os.PathLike | None = None) -> Handoff:
    """Place the GGUF in LM Studio's models folder as ``publisher/model/FILE.gguf`` (hard link or copy)."""
    path = Path(gguf_path).expanduser().resolve()
    _check_gguf(path)
    root = Path(models_dir).expanduser() if models_dir else lmstudio_models_dir()
    model = model or re.sub(r"-(I?Q\d\w*|F16|BF16|F32)$", "", path.stem, flags=re.I) or path.stem
    for part, what in ((publisher, "publisher"), (model, "model")):
        if not part or "/" in part or part in (".", ".."):
            raise NibbleError(f"LM Studio {what} name '{part}' must be one folder name")
    dest = root / publisher / model / path.name
    if dest.exists():
        if dest.stat().st_size == path.stat().st_size and (dest.samefile(path) or _same_bytes(dest, path)):
            return Handoff(f"LM Studio already has this file at {dest}", dest)
        raise NibbleError(f"{dest} already exists with other contents; remove it in LM Studio or choose another "
                          "model name")
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, tmp)
            how = "linked"
        except OSError:
            shutil.copyfile(path, tmp)
            how = "copied"
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NibbleError(f"cannot place the file in LM Studio's folder {root} ({exc.strerror}); set "
                          "LMSTUDIO_MODELS_DIR to LM Studio's models folder") from None
    return Handoff(f"{how} {path.name} into LM Studio's models as {publisher}/{model}; it appears in My Models", dest)


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True
