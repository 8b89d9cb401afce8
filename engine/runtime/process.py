"""A GGUF model running in a child process, behind the same :class:`~engine.runtime.Runtime` interface.

Used where llama.cpp cannot share the process (see ``engine.core.llama``): the child loads
llama.cpp before anything else, opens the model with :class:`~engine.runtime.GGUFRuntime`, and
answers calls over a pair of pipes. Only the primitives cross the pipe (tokens in, logits out);
generation, sampling and chat templates run in the parent as for any runtime.

Child entry: ``python -m engine.runtime.process READ_FD WRITE_FD``.
"""

from __future__ import annotations

if __name__ == "__main__":  # llama.cpp's libraries first: see engine.core.llama
    from engine.core.llama import preload

    preload()

import os
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Sequence

from engine.core.errors import NibbleError
from engine.core.spawn import child_env, module_argv
from engine.runtime.base import ByteStream, Runtime

# What the child may be asked to run, and the attributes the parent copies once the model is open.
_CALLS = frozenset({"tokenize", "detokenize", "token_text", "token_bytes", "memory_bytes", "logits", "_prefill",
                    "_step", "reset", "time_prompt", "time_generation"})
_ATTRS = ("kind", "device", "n_vocab", "n_ctx", "bos_id", "eos_ids", "add_bos", "chat_template", "bos_token", "kv_type",
          "eos_token", "notices", "threads", "n_batch")


class GGUFProcessRuntime(Runtime):
    """A GGUF model in a child process; same methods and attributes as ``GGUFRuntime``."""

    kind = "gguf"

    def __init__(self, path, **options):
        super().__init__()
        self.path = path
        child_r, parent_w = os.pipe()
        parent_r, child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(module_argv("engine.runtime.process", str(child_r), str(child_w)),
                                          pass_fds=(child_r, child_w), env=child_env())
        finally:
            os.close(child_r)
            os.close(child_w)
        self._send = Connection(parent_w, readable=False)
        self._recv = Connection(parent_r, writable=False)
        try:
            info = self._call("open", str(path), options)
        except BaseException:
            self.close()
            raise
        for key, value in info.items():
            setattr(self, key, value)
        self.pid = self._proc.pid

    def _call(self, method: str, *args):
        if self._proc is None:
            raise NibbleError(f"{self.name} is closed")
        try:
            self._send.send((method, args))
            status, *payload = self._recv.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self._proc.wait()
            self._proc = None
            raise NibbleError(f"llama.cpp stopped while running {self.name} (exit code {code}); "
                              "try fewer GPU layers or a shorter context length", setting="GPU layers") from None
        if status == "ok":
            return payload[0]
        kind, message = payload
        if kind == "NibbleError":
            raise NibbleError(message)
        raise RuntimeError(f"{self.name}: {kind}: {message}")

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        return self._call("tokenize", text, add_bos, special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._call("detokenize", list(ids))

    def token_text(self, token_id: int) -> str | None:
        return self._call("token_text", token_id)

    def token_bytes(self, token_id: int) -> bytes:
        return self._call("token_bytes", int(token_id))

    def stream_decoder(self):
        return ByteStream(self.token_bytes)

    def memory_bytes(self) -> tuple[int, int, int]:
        return tuple(self._call("memory_bytes"))

    def logits(self, ids: Sequence[int], start: int = 0):
        return self._call("logits", list(ids), start)

    def _prefill(self, ids: Sequence[int]):
        return self._call("_prefill", list(ids))

    def _step(self, token_id: int):
        return self._call("_step", int(token_id))

    def reset(self) -> None:
        self._call("reset")

    def time_prompt(self, ids: Sequence[int]) -> float:
        return self._call("time_prompt", list(ids))

    def time_generation(self, ids: Sequence[int]) -> float:
        return self._call("time_generation", list(ids))

    def close(self) -> None:
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is None:
            return
        try:
            self._send.send(("close", ()))
            proc.wait(timeout=10)
        except (OSError, BrokenPipeError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            self._send.close()
            self._recv.close()


def serve(read_fd: int, write_fd: int) -> int:
    """The child's loop: open the model, then answer calls until told to close or the parent goes away."""
    from engine.runtime.gguf import GGUFRuntime

    recv, send = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    rt = None
    while True:
        try:
            method, args = recv.recv()
        except (EOFError, OSError):
            break
        if method == "close":
            break
        try:
            if method == "open":
                import pathlib

                path, options = args
                rt = GGUFRuntime(pathlib.Path(path), **options)
                result = {key: getattr(rt, key) for key in _ATTRS if hasattr(rt, key)}
            elif method in _CALLS and rt is not None:
                result = getattr(rt, method)(*args)
            else:
                raise RuntimeError(f"unknown call {method!r}")
            send.send(("ok", result))
        except Exception as exc:  # sent to the parent, which raises it there
            send.send(("error", type(exc).__name__, str(exc)))
    if rt is not None:
        rt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve(int(sys.argv[1]), int(sys.argv[2])))
