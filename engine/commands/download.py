"""nibble download: fetch a Hub model (only what Nibble needs) into the Hugging Face cache."""

from __future__ import annotations

import sys
import time

from engine.core.units import human_bytes
from engine.core.progress import CancelToken, JsonLinesReporter, Reporter

NAME = "download"
HELP = "Download a model from the Hugging Face Hub into the local cache (resumes an interrupted download)"
ORDER = 11


class _ByteReporter(Reporter):
    """One self-updating line on a terminal, at most a few times a second."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.token = CancelToken()
        self._last = 0.0
        self._finished = False
        self._tty = self.stream.isatty()

    def progress(self, done, total, message="", **extra):
        now = time.monotonic()
        finished = done >= total
        if (not finished and now - self._last < (0.2 if self._tty else 5.0)) or (finished and self._finished):
            return
        self._finished = finished
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        line = f"{pct:5.1f}%  {human_bytes(done)} / {human_bytes(total)}  {message}"
        if self._tty:
            self.stream.write("\r" + line[:110].ljust(110) + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def log(self, message):
        print(message, file=self.stream, flush=True)

    def is_cancelled(self):
        return bool(self.token)


def add_arguments(p):
    p.add_argument("model", help="Hub model id, e.g. Qwen/Qwen2.5-7B-Instruct")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--gguf", metavar="FILE", help="fetch only this .gguf file (for GGUF-only repositories)")
    p.add_argument("--json-progress", action="store_true", help="print progress as JSON lines on stdout")


def run(args) -> int:
    from engine import hub
    from engine.models import library

    reporter = JsonLinesReporter() if args.json_progress else _ByteReporter()
    path = hub.download_model(args.model, revision=args.revision, gguf=args.gguf, reporter=reporter)
    lib = library.default()
    if path.suffix == ".gguf":
        entry = lib.find_path(path) or lib.add_entry(path, "gguf", hub_id=args.model, figures={"file_size": path.stat().st_size})
    else:
        entry = lib.record_original(path, hub_id=args.model)
    if args.json_progress:
        import json

        print(json.dumps({"event": "done", "path": str(path), "library_id": entry.id}), flush=True)
    else:
        print(path)
    return 0
