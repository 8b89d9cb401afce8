"""What every job that writes a file or folder obeys: an output never replaces an input or a file of
another kind, is checked (folder, permissions, free space) before any work starts, is written under a
temporary name beside its target and renamed at the end; temporaries left by a process that died are
removed by the next run that writes there.

Temporaries are named ``.NAME.TAG.PID.tmp`` (files or folders), so a later run can tell whose they are.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from engine.core.errors import NibbleError

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<tag>[\w-]+)\.(?P<pid>\d+)\.tmp$")
#: Errors of the file system that mean "no room": a full disk, a quota, a file-size limit.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def temp_path(out: Path, tag: str) -> Path:
    """A temporary name in ``out``'s folder, so the final rename is atomic and cleanup is easy."""
    out = Path(out)
    return out.with_name(f".{out.name}.{tag}.{os.getpid()}.tmp")


def final_path(path: Path) -> Path:
    """The output a temporary stands for (``.NAME.TAG.PID.tmp`` -> ``NAME``), or ``path`` itself."""
    path = Path(path)
    m = _TEMP.match(path.name)
    return path.with_name(m.group("name")) if m else path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the ``.NAME.TAG.PID.tmp`` files and folders in ``folder`` whose process is gone; returns them."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or _alive(int(m.group("pid"))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _real(path: Path, what: str) -> Path:
    try:
        return Path(path).expanduser().resolve(strict=False)
    except (OSError, RuntimeError):  # a loop of symbolic links
        raise NibbleError(f"{what} {path} goes through a loop of symbolic links; give a real path", setting=what) from None


def same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError):
            return False


def input_files(path: Path | None) -> list[Path]:
    """The files a job reads from ``path``: the file itself, or every file in the folder."""
    if path is None:
        return []
    p = Path(path)
    try:
        if p.is_dir():
            return [f for f in p.iterdir() if f.is_file()]
        return [p] if p.exists() else []
    except OSError:
        return []


def check_output(out: Path, *, what: str = "output path", inputs=(), replaceable=None, kind: str = "a file of this kind",
                 folder_output: bool = False) -> Path:
    """Refuse an output path that would go wrong, before any work: a loop of links, a symbolic link, a
    missing or read-only folder, one of the ``inputs`` (files or folders read by the job), or an existing
    file or folder of another kind (``replaceable(path)`` says whether an existing file is ``kind``; for a
    ``folder_output``, an existing folder must hold a ``config.json``). Removes stale temporaries beside it.
    Returns ``out`` as given (not resolved)."""
    out = Path(out).expanduser()
    real = _real(out, what)
    if out.is_symlink():
        raise NibbleError(f"{what} {out} is a symbolic link; give the real path so nothing else is overwritten", setting=what)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise NibbleError(f"{what} {out}: the folder {folder} does not exist; create it or choose another {what}", setting=what)
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        if same_path(src, out) or real == _real(src, "input"):
            raise NibbleError(f"{what} {out} is an input of this job; choose another name so the original is kept", setting=what)
        if folder_output and src.exists() and _real(src, "input").is_relative_to(real):
            raise NibbleError(f"{what} {out} holds an input of this job; choose another folder", setting=what)
    if out.exists():
        if folder_output:
            if not out.is_dir():
                raise NibbleError(f"{what} {out} is a file; AWQ writes a folder: choose a new folder name", setting=what)
            if any(out.iterdir()) and not (out / "config.json").is_file():
                raise NibbleError(f"{what} {out} is a folder that is not a model; choose a new or empty folder", setting=what)
        else:
            if out.is_dir():
                raise NibbleError(f"{what} {out} is a folder; give a file name", setting=what)
            if replaceable is not None and not replaceable(out):
                raise NibbleError(f"{what} {out} exists and is not {kind}; choose another name or remove it first", setting=what)
            try:  # opens without changing it: fails on a read-only or immutable file
                os.close(os.open(out, os.O_WRONLY))
            except OSError as exc:
                raise NibbleError(f"{what} {out} cannot be replaced ({exc.strerror}); choose another name", setting=what) from None
    probe = temp_path(out, "probe")
    try:
        with open(probe, "wb"):
            pass
    except OSError as exc:
        raise NibbleError(f"cannot write in {folder} ({exc.strerror}); choose another {what}", setting=what) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    remove_stale_temporaries(folder)
    return out


def check_new_folder(out: Path, *, what: str = "output path", inputs=()) -> Path:
    """Refuse a folder output (an AWQ checkpoint, several GGUF files) that exists and is not empty, or that is
    named like a file (``.gguf``), besides what :func:`check_output` refuses. Returns ``out`` as given."""
    out = Path(out).expanduser()
    if out.suffix.lower() == ".gguf":
        raise NibbleError(f"{what} {out}: this job writes a folder; give a folder name, not a .gguf file", setting=what)
    check_output(out, what=what, inputs=inputs, folder_output=True)
    if out.is_dir() and any(out.iterdir()):
        raise NibbleError(f"{what} {out} already exists and is not empty; choose a new folder name or remove it",
                          setting=what)
    return out


def check_free_space(folder: Path, need_bytes: int, what: str = "output path") -> None:
    """Refuse to start when ``folder`` lacks ``need_bytes`` of free space."""
    if need_bytes <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise NibbleError(f"not enough disk space in {folder}: about {need_bytes / 2**20:,.0f} MiB needed, "
                          f"{free / 2**20:,.0f} MiB free; free some space or choose another {what}")


def write_error(exc: OSError, target: Path) -> NibbleError:
    """A failed write, in words for the user (disk full, read-only, ...)."""
    target = final_path(target)
    short_write = exc.errno is None and "requested and" in str(exc)  # a writer that counts its bytes
    if exc.errno in NO_SPACE or short_write:
        return disk_full_error(target)
    return NibbleError(f"cannot write {target}: {exc.strerror or exc}; check the folder's permissions and free space")


def disk_full_error(target: Path) -> NibbleError:
    target = final_path(target)
    folder = target.parent if str(target.parent) else Path(".")
    return NibbleError(f"disk full while writing {target} (or a file-size limit reached); free some space in "
                       f"{folder} or choose another folder, and try again")
