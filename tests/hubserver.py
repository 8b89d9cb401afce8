"""A small stand-in for the Hugging Face Hub, for tests that drive the real ``huggingface_hub`` client.

It is a plain ``http.server`` on 127.0.0.1 (ephemeral port) in a background thread and serves the routes
``huggingface_hub`` calls for what Nibble does:

- ``GET /api/models`` — search (``search``, ``pipeline_tag``, ``num_parameters``, ``sort``, ``limit``, ``expand``)
- ``GET /api/models/{id}`` and ``/api/models/{id}/revision/{rev}`` — model info with siblings (``blobs=1``:
  sizes, blob ids, LFS sha256), ``safetensors`` parameter counts, ``gated``, ``cardData.license``
- ``HEAD``/``GET /{id}/resolve/{rev}/{file}`` — ``X-Repo-Commit``, ``ETag`` (git blob id) or, for LFS files,
  a redirect to ``/cdn/{sha256}`` on another host name (``localhost``, as the Hub's CDN) with
  ``X-Linked-Etag`` / ``X-Linked-Size``; ``Range`` requests (206)
- ``GET /api/whoami-v2`` — token check for ``huggingface_hub.login``
- 401 ``GatedRepo`` for gated files without a valid token, 404 ``RepoNotFound`` / ``EntryNotFound``

``drop_connection(repo_id, filename, after_bytes, times=1)`` makes the next GET of that file send its
headers and ``after_bytes`` of body, then close the socket. ``requests`` records what was asked for.

``lie(repo_id, **lies)`` turns the server hostile for one repository (a broken or malicious mirror): ``etag``
(ETag and X-Linked-Etag of every file), ``commit`` (the sha in the model info and X-Repo-Commit),
``linked_size`` (X-Linked-Size of LFS files), ``listed_size`` (sizes in the file listing), ``body``
(LFS files: ``"flip"``: one byte changed, ``"extra"``: more bytes than announced), ``redirect`` (``"loop"``: LFS
files redirect to themselves forever; ``"elsewhere"``: to a path of this server that holds nothing), ``slow``
(bytes a second: a slow link, so a download can be interrupted half-way).

Use the ``hub_server`` fixture: it points ``HF_ENDPOINT`` and ``HF_HOME`` at the server and a temporary
folder, clears ``HF_HUB_OFFLINE`` / ``HF_TOKEN``, and patches the values ``huggingface_hub`` read at import.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

_LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack", ".model")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def safetensors_parameters(data: bytes) -> dict[str, int]:
    """Parameter count per dtype from a safetensors file's header (what the Hub reports)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    counts: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        counts[info["dtype"]] = counts.get(info["dtype"], 0) + count
    return counts


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    private: bool = False
    downloads: int = 0
    likes: int = 0
    license: str | None = "apache-2.0"
    pipeline_tag: str | None = "text-generation"
    last_modified: str = "2024-01-01T00:00:00.000Z"
    sha: str = ""
    tags: list[str] = field(default_factory=list)
    parameters: dict[str, int] | None = None  # what the Hub reports, when not counted from the files

    def __post_init__(self):
        if not self.sha:
            self.sha = hashlib.sha1(("commit:" + self.repo_id).encode()).hexdigest()

    def is_lfs(self, name: str) -> bool:
        return name.endswith(_LFS_SUFFIXES) or len(self.files[name]) > 10_000

    def safetensors(self) -> dict | None:
        if self.parameters:
            return {"parameters": dict(self.parameters), "total": sum(self.parameters.values())}
        counts: dict[str, int] = {}
        for name, data in self.files.items():
            if name.endswith(".safetensors"):
                for dtype, n in safetensors_parameters(data).items():
                    counts[dtype] = counts.get(dtype, 0) + n
        return {"parameters": counts, "total": sum(counts.values())} if counts else None

    def siblings(self, blobs: bool) -> list[dict]:
        out = []
        for name, data in sorted(self.files.items()):
            entry: dict = {"rfilename": name}
            if blobs:
                entry["size"] = len(data)
                entry["blobId"] = git_blob_id(data)
                if self.is_lfs(name):
                    entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            out.append(entry)
        return out

    def info(self, *, blobs: bool = False, expand: list[str] | None = None) -> dict:
        full = {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0] if "/" in self.repo_id else None,
            "sha": self.sha,
            "lastModified": self.last_modified,
            "createdAt": self.last_modified,
            "private": self.private,
            "gated": "manual" if self.gated else False,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "library_name": "transformers",
            "tags": list(self.tags) + ([f"license:{self.license}"] if self.license else []),
            "pipeline_tag": self.pipeline_tag,
            "cardData": {"license": self.license} if self.license else {},
            "siblings": self.siblings(blobs),
            "safetensors": self.safetensors(),
        }
        if not full["safetensors"]:
            del full["safetensors"]
        if "config.json" in self.files:  # the Hub's summary of config.json
            cfg = json.loads(self.files["config.json"])
            full["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
        if expand:
            keep = {"_id", "id", *expand}
            full = {k: v for k, v in full.items() if k in keep}
        return full


def _parse_count(text: str) -> int:
    m = re.fullmatch(r"([\d.]+)([KMBT]?)", text.strip(), re.I)
    if not m:
        raise ValueError(text)
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


class StandInHub:
    """The server: add repositories with :meth:`add_model`, then point ``HF_ENDPOINT`` at :attr:`url`."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, str] = {}  # token -> user name
        self.requests: list[dict] = []
        self._drops: dict[tuple[str, str], list[int]] = {}
        self.lies: dict[str, dict] = {}
        self._lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # LFS files redirect to another host name for the same server, like the Hub's CDN
        self.cdn_url = f"http://localhost:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_model(self, repo_id: str, files: dict[str, bytes], **kw) -> Repo:
        repo = Repo(repo_id, dict(files), **kw)
        self.repos[repo_id] = repo
        return repo

    def add_token(self, token: str, user: str = "tester") -> None:
        self.tokens[token] = user

    def drop_connection(self, repo_id: str, filename: str, after_bytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of the file stop after ``after_bytes`` bytes of body."""
        self._drops[(repo_id, filename)] = [after_bytes] * times

    def lie(self, repo_id: str, **lies) -> None:
        """Answer for ``repo_id`` with the given lies (see the module docstring)."""
        self.lies[repo_id] = dict(lies)

    def _take_drop(self, repo_id: str, filename: str) -> int | None:
        with self._lock:
            pending = self._drops.get((repo_id, filename))
            return pending.pop() if pending else None

    def file_requests(self, filename: str, method: str = "GET") -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r.get("file") == filename]


class _Handler(BaseHTTPRequestHandler):
    server_hub: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # --- helpers -----------------------------------------------------------------------------------
    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.server_hub.tokens.get(auth[7:].strip())
        return None

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None):
        h = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        self._json({"error": message}, status, h)

    def _record(self, **extra) -> None:
        self.server_hub.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "range": self.headers.get("Range"),
                "authorized": "Authorization" in self.headers,
                **extra,
            }
        )

    def _find_repo(self, parts: list[str]) -> tuple[Repo | None, list[str]]:
        """Match the longest leading ``owner/name`` (or ``name``) in ``parts`` against known repos."""
        for n in (2, 1):
            rid = "/".join(parts[:n])
            if rid in self.server_hub.repos:
                return self.server_hub.repos[rid], parts[n:]
        return None, parts

    def _repo_visible(self, repo: Repo | None) -> bool:
        return repo is not None and (not repo.private or self._user() is not None)

    # --- routes ------------------------------------------------------------------------------------
    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def do_POST(self):  # creating repositories and uploading: tests/hubwrite.py
        from hubwrite import route_write

        route_write(self)

    do_PUT = do_POST

    def _route(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        if parts[:2] == ["api", "whoami-v2"]:
            self._record()
            user = self._user()
            if user is None:
                return self._error(401, "", "Invalid credentials in Authorization header")
            role, orgs = getattr(self.server_hub, "token_roles", {}).get(self.headers["Authorization"][7:].strip(), ("read", ()))
            return self._json({"type": "user", "name": user, "orgs": [{"name": o} for o in orgs],
                               "auth": {"accessToken": {"displayName": "nibble", "role": role}}})
        if parts[:2] == ["api", "models"] and len(parts) == 2:
            self._record()
            return self._search(query)
        if parts[:2] == ["api", "models"]:
            self._record()
            repo, rest = self._find_repo(parts[2:])
            if not self._repo_visible(repo):
                return self._error(404, "RepoNotFound", "Repository not found")
            if rest and rest[0] == "revision" and len(rest) >= 2 and unquote(rest[1]) not in ("main", repo.sha):
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
            info = repo.info(blobs=blobs, expand=query.get("expand"))
            lies = self.server_hub.lies.get(repo.repo_id, {})
            if "commit" in lies and "sha" in info:
                info["sha"] = lies["commit"]
            if "listed_size" in lies:
                for sib in info.get("siblings", []):
                    if "size" in sib:
                        sib["size"] = lies["listed_size"]
                        if "lfs" in sib:
                            sib["lfs"]["size"] = lies["listed_size"]
            return self._json(info)
        if parts and parts[0] == "loop":
            self._record()
            return self._send(302, headers={"Location": self.path}, ctype="text/plain")
        if parts and parts[0] == "cdn" and len(parts) == 2:
            for repo in self.server_hub.repos.values():
                for name, data in repo.files.items():
                    if hashlib.sha256(data).hexdigest() == parts[1]:
                        self._record(file=name, repo=repo.repo_id)
                        return self._serve_bytes(repo, name, data)
            return self._send(404, b"no such blob", ctype="text/plain")
        repo, rest = self._find_repo(parts)
        if repo is None and "resolve" in parts[1:3]:  # an unknown repository
            rest = parts[parts.index("resolve", 1):]
        if len(rest) >= 3 and rest[0] == "resolve":
            filename = "/".join(rest[2:])
            self._record(file=filename, repo=repo.repo_id if repo else None)
            if not self._repo_visible(repo):
                return self._error(404, "RepoNotFound", "Repository not found")
            lies = self.server_hub.lies.get(repo.repo_id, {})
            if rest[1] not in ("main", repo.sha, lies.get("commit")):
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            commit = str(lies.get("commit", repo.sha))
            if repo.gated and self._user() is None:
                return self._error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                )
            if filename not in repo.files:
                return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
            data = repo.files[filename]
            if repo.is_lfs(filename):
                sha = hashlib.sha256(data).hexdigest()
                location = {"loop": f"{self.server_hub.cdn_url}/loop/{sha}",
                            "elsewhere": f"{self.server_hub.cdn_url}/nothing/{sha}"}.get(
                    lies.get("redirect"), f"{self.server_hub.cdn_url}/cdn/{sha}")
                return self._send(
                    302,
                    headers={
                        "Location": location,
                        "X-Repo-Commit": commit,
                        "X-Linked-Etag": f'"{lies.get("etag", sha)}"',
                        "X-Linked-Size": str(lies.get("linked_size", len(data))),
                        "ETag": f'"{lies.get("etag", git_blob_id(data))}"',
                    },
                    ctype="text/plain",
                )
            return self._serve_bytes(repo, filename, data,
                                     {"X-Repo-Commit": commit, "ETag": f'"{lies.get("etag", git_blob_id(data))}"'})
        self._record()
        self._send(404, b"not found", ctype="text/plain")

    def _search(self, query: dict):
        repos = list(self.server_hub.repos.values())
        if "search" in query:
            needle = query["search"][0].lower()
            repos = [r for r in repos if needle in r.repo_id.lower()]
        if "pipeline_tag" in query:
            repos = [r for r in repos if r.pipeline_tag == query["pipeline_tag"][0]]
        if "num_parameters" in query:
            for part in query["num_parameters"][0].split(","):
                key, _, value = part.partition(":")
                bound = _parse_count(value)
                keep = (lambda t: t >= bound) if key == "min" else (lambda t: t <= bound)
                repos = [r for r in repos if r.safetensors() and keep(r.safetensors()["total"])]
        repos = [r for r in repos if not r.private or self._user() is not None]
        sort = query.get("sort", [None])[0]
        keys = {"downloads": "downloads", "likes": "likes", "lastModified": "last_modified", "createdAt": "last_modified"}
        if sort in keys:
            repos.sort(key=lambda r: getattr(r, keys[sort]), reverse=True)
        limit = int(query.get("limit", ["1000"])[0])
        self._json([r.info(expand=query.get("expand")) for r in repos[:limit]])

    def _serve_bytes(self, repo: Repo, filename: str, data: bytes, headers: dict | None = None):
        headers = dict(headers or {})
        lfs_get = self.command == "GET" and repo.is_lfs(filename)
        body_lie = self.server_hub.lies.get(repo.repo_id, {}).get("body") if lfs_get else None
        if body_lie == "flip":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        elif body_lie == "extra":
            data = data + b"\0" * 4096
        headers["Accept-Ranges"] = "bytes"
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            start = int(m.group(1))
            end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1]
        drop = self.server_hub._take_drop(repo.repo_id, filename) if self.command == "GET" else None
        slow = self.server_hub.lies.get(repo.repo_id, {}).get("slow") if self.command == "GET" else None
        if slow:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            piece = max(1, int(slow) // 20)
            try:
                for i in range(0, len(body), piece):
                    self.wfile.write(body[i : i + piece])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client went away
                self.close_connection = True
            return
        if drop is None:
            return self._send(status, body, headers, ctype="application/octet-stream")
        # Send the full headers, part of the body, then cut the connection.
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:drop])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def tiny_safetensors(shapes: dict[str, tuple[int, ...]], dtype: str = "F16", seed: int = 0) -> bytes:
    """A real safetensors file with random tensors of the given shapes."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    np_dtype = {"F16": np.float16, "F32": np.float32}[dtype]
    return save({name: rng.standard_normal(shape).astype(np_dtype) for name, shape in shapes.items()})


def llama_config(**extra) -> bytes:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 256,
        "torch_dtype": "float16",
    }
    cfg.update(extra)
    return json.dumps(cfg).encode()


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A running :class:`StandInHub` that ``huggingface_hub`` (and Nibble) talk to, with a fresh HF_HOME."""
    import huggingface_hub.constants as c
    import huggingface_hub.hf_api as hf_api

    hub = StandInHub()
    home = tmp_path / "hf_home"
    home.mkdir()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NIBBLE_HOME", str(tmp_path / "nibble_home"))
    monkeypatch.setattr(c, "ENDPOINT", hub.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HOME", str(home))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(c, "HF_ASSETS_CACHE", str(home / "assets"))
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(c, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
    hub.home = home
    hub.cache = home / "hub"
    yield hub
    hub.close()


__all__ = ["StandInHub", "Repo", "hub_server", "tiny_safetensors", "llama_config", "git_blob_id"]
