"""Downloading the files Nibble needs into the standard Hugging Face cache: byte progress, a free-disk
check first, cancel between chunks, resume of an interrupted file."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import (
    get_hf_file_metadata,
    hf_hub_url,
    repo_folder_name,
)
from huggingface_hub.utils import (
    WeakFileLock,
    build_hf_headers,
    get_session,
    hf_raise_for_status,
)

from engine.core.units import human_bytes
from engine.core.errors import Cancelled, NibbleError
from engine.core.outputs import write_error
from engine.core.progress import Reporter
from engine.hub.api import (
    check_repo,
    fetch_json,
    repo_model,
    support_files,
    weight_files,
)
from engine.hub.common import (
    TIMEOUT,
    check_commit,
    check_etag,
    check_file_name,
    check_repo_id,
    check_revision,
    endpoint,
    hub_errors,
    require_online,
)
from engine.models.resolve import INDEX_FILE

#: Bytes between two progress reports of a download (cancel is checked on every piece received).
CHUNK_BYTES = 1 << 20


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Download


def _check_disk(folder: Path, needed: int, repo_id: str) -> None:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise NibbleError(
            f"not enough disk space for {repo_id}: the download needs {human_bytes(needed)} but {probe} has "
            f"{human_bytes(free)} free; free some space or set HF_HOME to a folder on a larger disk"
        )


def _link(blob: Path, pointer: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    except OSError:  # no symlinks (Windows without developer mode): the snapshot holds the file itself
        shutil.copyfile(blob, pointer)


class _Checksum:
    """The Hub's ETag: sha256 for LFS files, the git blob id (sha1 of "blob <size>\\0" + data) otherwise."""

    def __init__(self, etag: str, size: int):
        self.etag = etag
        self.size = size
        self.reset()

    def reset(self) -> None:
        if re.fullmatch(r"[0-9a-f]{64}", self.etag):
            self.h = hashlib.sha256()
        elif re.fullmatch(r"[0-9a-f]{40}", self.etag):
            self.h = hashlib.sha1(b"blob %d\0" % self.size)
        else:
            self.h = None

    def update(self, data: bytes) -> None:
        if self.h is not None:
            self.h.update(data)

    def ok(self) -> bool:
        return self.h is None or self.h.hexdigest() == self.etag


class _Transfer:
    """Byte counts across all files of one download, for the reporter."""

    def __init__(self, reporter: Reporter, total: int, done: int):
        self.reporter, self.total, self.done = reporter, total, done

    def advance(self, n: int, name: str) -> None:
        self.done += n
        self.reporter.progress(self.done, self.total, f"downloading {name}", unit="bytes", file=name)


def _download_file(
    repo_id: str, name: str, sha: str, storage: Path, token: str | None, transfer: _Transfer, retries: int,
    listed_size: int | None = None,
) -> None:
    url = hf_hub_url(repo_id, name, revision=sha, endpoint=endpoint())
    meta = get_hf_file_metadata(url, token=token, timeout=TIMEOUT, endpoint=endpoint())
    if not meta.etag or meta.size is None:
        raise NibbleError(f"{repo_id}: the Hub did not say the size and checksum of {name}; try again later")
    etag = check_etag(meta.etag, repo_id, name)  # it becomes a path: blobs/<etag>
    size = int(meta.size)
    if size < 0 or (listed_size is not None and size != listed_size):
        raise NibbleError(f"{endpoint()} gave two sizes for {name} of {repo_id} ({listed_size} listed, {size} sent); "
                          "nothing was saved: try again later or check HF_ENDPOINT")
    blob = storage / "blobs" / etag
    pointer = storage / "snapshots" / sha / name
    blob.parent.mkdir(parents=True, exist_ok=True)
    headers = build_hf_headers(token=token)
    if httpx2.URL(meta.location).host != httpx2.URL(url).host:
        headers.pop("authorization", None)  # signed CDN address: the token stays with the Hub
    lock = storage.parent / ".locks" / storage.name / f"{etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(lock)):
        if blob.exists() and blob.stat().st_size == size:
            _link(blob, pointer)
            return
        part = blob.with_name(blob.name + ".incomplete")
        check = _Checksum(etag, size)
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have:
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                    check.update(chunk)
        if have:
            transfer.advance(have, name)
        failures = 0
        resumable = False
        try:
            while have < size:
                try:
                    request_headers = dict(headers, **({"Range": f"bytes={have}-"} if have else {}))
                    timeout = httpx2.Timeout(TIMEOUT, read=60.0)
                    with get_session().stream("GET", meta.location, headers=request_headers, timeout=timeout) as r:
                        if r.status_code >= 400:
                            r.read()
                            hf_raise_for_status(r)
                        if have and r.status_code != 206:  # the server ignored Range: start over
                            transfer.advance(-have, name)
                            part.unlink(missing_ok=True)
                            check.reset()
                            have = 0
                        with part.open("ab") as out:
                            unreported = 0
                            try:
                                # pieces as they arrive, so a dropped connection loses nothing already received
                                for chunk in r.iter_bytes():
                                    if have + len(chunk) > size:
                                        raise NibbleError(
                                            f"{endpoint()} sent more of {name} than the {size} bytes it announced; "
                                            "the file was refused: try again later or check HF_ENDPOINT")
                                    out.write(chunk)
                                    check.update(chunk)
                                    have += len(chunk)
                                    unreported += len(chunk)
                                    failures = 0
                                    if unreported >= CHUNK_BYTES:
                                        transfer.advance(unreported, name)
                                        unreported = 0
                                    transfer.reporter.check_cancel()
                            finally:
                                if unreported:
                                    transfer.advance(unreported, name)
                    if have < size:
                        raise httpx2.RemoteProtocolError("connection closed before the end of the file")
                except httpx2.TransportError as exc:
                    failures += 1
                    if failures > retries:
                        resumable = True
                        raise NibbleError(
                            f"network lost while downloading {name} from {repo_id} ({human_bytes(have)} of "
                            f"{human_bytes(size)} kept; {type(exc).__name__}): run `nibble download {repo_id}` "
                            "again to resume"
                        ) from None
                    log.warning("connection to the Hub dropped during %s; resuming at byte %d", name, have)
                    time.sleep(0.5 * failures)
                except OSError as exc:  # a full disk: what arrived is kept for the next run to resume
                    if isinstance(exc, HfHubHTTPError):  # an answer of the server, not a write
                        raise
                    resumable = True
                    raise write_error(exc, pointer) from None
        except NibbleError:
            if not resumable:
                part.unlink(missing_ok=True)  # what a server sent wrongly is not kept
            raise
        # A cancel (Ctrl-C, the GUI's Cancel) keeps blobs/<etag>.incomplete: the next download resumes it.
        if have != size or not check.ok():
            part.unlink(missing_ok=True)
            raise NibbleError(f"{name} from {repo_id} arrived damaged (size or checksum differs); download it again")
        os.replace(part, blob)
    _link(blob, pointer)


def download_model(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    reporter: Reporter | None = None,
    gguf: str | None = None,
    retries: int = 3,
) -> Path:
    """Download what Nibble needs of a Hub model into the Hugging Face cache; returns the snapshot folder.

    Only config, tokenizer, generation config and safetensors weights (with their index) are fetched.
    With ``gguf`` set, only that one .gguf file is fetched and its path is returned (for GGUF-only
    repositories). Files already in the cache are not fetched again; a file whose transfer broke off is
    resumed where it stopped. Progress is in bytes over the whole download.
    """
    reporter = reporter or Reporter()
    repo_id, revision = check_repo_id(repo_id), check_revision(revision)
    require_online()
    with hub_errors(repo_id, token, revision):
        if gguf:
            model = repo_model(repo_id, revision, token)
            files = model.files
            if gguf not in {f.name for f in files}:
                have = sorted(f.name for f in files if f.name.endswith(".gguf"))
                raise NibbleError(f"{repo_id} has no file {gguf}; its GGUF files are: {', '.join(have) or 'none'}")
            sha, wanted = model.sha, [gguf]
        else:
            model = check_repo(repo_id, revision=revision, token=token)
            files, sha = model.files, model.sha
            names = [f.name for f in files]
            weight_map = fetch_json(repo_id, INDEX_FILE, sha, token).get("weight_map") if INDEX_FILE in names else None
            missing = sorted(set((weight_map or {}).values()) - set(names))
            if missing:
                raise NibbleError(f"{repo_id}: {INDEX_FILE} names files the repository does not have ({missing[0]})")
            wanted = support_files(names) + weight_files(names, weight_map)
        check_commit(sha, repo_id)
        for name in wanted:
            check_file_name(name, repo_id)
        sizes = {f.name: f.size for f in files}
        lfs = {f.name: f.sha256 for f in files if f.sha256}
        storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
        snapshot = storage / "snapshots" / sha
        todo = [n for n in wanted if not (snapshot / n).exists()]
        total = sum(sizes[n] for n in wanted)
        # an interrupted file waits as blobs/<sha256>.incomplete; what it holds needs no new space
        parts = [storage / "blobs" / f"{check_etag(lfs[n], repo_id, n)}.incomplete" for n in todo if n in lfs]
        partial = sum(p.stat().st_size for p in parts if p.exists())
        _check_disk(storage, sum(sizes[n] for n in todo) - partial, repo_id)
        transfer = _Transfer(reporter, total, total - sum(sizes[n] for n in todo))
        reporter.progress(transfer.done, total, f"{repo_id}: {len(todo)} of {len(wanted)} files to download",
                          unit="bytes")  # fmt: skip
        for name in todo:
            reporter.check_cancel()
            _download_file(repo_id, name, sha, storage, token, transfer, retries, listed_size=sizes.get(name) or None)
        ref = storage / "refs" / (revision or "main")
        if not re.fullmatch(r"[0-9a-f]{40}", revision or ""):
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(sha)
        reporter.progress(total, total, f"{repo_id} is ready", unit="bytes")
    return snapshot / gguf if gguf else snapshot


