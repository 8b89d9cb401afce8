"""The write side of the stand-in Hub (tests/hubserver.py): what ``huggingface_hub`` calls to publish.

- ``POST /api/repos/create`` — a repository in the caller's namespace or one of their organisations (403
  otherwise, 409 when it exists), private on request
- ``POST /api/validate-yaml`` — a model card's header
- ``POST /api/models/{id}/preupload/{rev}`` — which files go through LFS, and the oid the Hub already has
- ``POST /{id}.git/info/lfs/objects/batch`` — an upload action for each object the Hub does not hold yet
  (an object sent before a commit that never came is not asked for again)
- ``PUT /lfs-upload/{oid}`` — the object's bytes, checked against the oid; ``fail_uploads(n)`` breaks the
  next n of them
- ``POST /api/models/{id}/commit/{rev}`` — the commit (NDJSON), refused (403) outside the caller's namespaces
- ``PUT /api/models/{id}/settings`` — gated

``write_token(hub, token, user, orgs=())`` adds a token with write access.
"""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import unquote, urlsplit

from hubserver import Repo, git_blob_id


def write_token(hub, token: str, user: str, orgs: tuple[str, ...] = ()) -> None:
    hub.add_token(token, user)
    if not hasattr(hub, "token_roles"):
        hub.token_roles = {}
    hub.token_roles[token] = ("write", tuple(orgs))


def fail_uploads(hub, n: int = 1) -> None:
    """The next ``n`` LFS uploads fail after the server has read them (a 400, which the client does not retry,
    standing in for a connection that stays broken)."""
    hub.failing_uploads = n


def _state(hub):
    if not hasattr(hub, "lfs_objects"):
        hub.lfs_objects, hub.commits, hub.failing_uploads = {}, [], getattr(hub, "failing_uploads", 0)
    return hub


def _may_write(handler, namespace: str) -> bool:
    user = handler._user()
    token = handler.headers.get("Authorization", "")[7:].strip()
    role, orgs = getattr(handler.server_hub, "token_roles", {}).get(token, ("read", ()))
    return user is not None and role == "write" and (namespace == user or namespace in orgs)


def _body(handler) -> bytes:
    n = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(n) if n else b""


def route_write(handler) -> None:
    hub = _state(handler.server_hub)
    url = urlsplit(handler.path)
    parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
    body = _body(handler)
    handler._record(body_bytes=len(body))
    if parts == ["api", "repos", "create"]:
        req = json.loads(body or b"{}")
        namespace = req.get("organization") or handler._user()
        repo_id = f"{namespace}/{req['name']}"
        if handler._user() is None:
            return handler._error(401, "", "Invalid credentials in Authorization header")
        if not _may_write(handler, namespace):
            return handler._error(403, "", f"You don't have the rights to create a model under the namespace {namespace}")
        if repo_id in hub.repos:
            return handler._error(409, "", "You already created this model repo", {"X-Error-Code": "RepoExists"})
        private = req.get("visibility") == "private" or bool(req.get("private"))
        hub.add_model(repo_id, {}, private=private)
        return handler._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
    if parts == ["api", "validate-yaml"]:
        return handler._json({"errors": [], "warnings": []})
    if parts[:2] == ["api", "models"]:
        repo, rest = handler._find_repo(parts[2:])
        if repo is None or not handler._repo_visible(repo):
            return handler._error(404, "RepoNotFound", "Repository not found")
        if not _may_write(handler, repo.repo_id.split("/")[0]):
            return handler._error(403, "", "You don't have the rights to write to this repository")
        if rest[:1] == ["preupload"]:
            files = json.loads(body)["files"]
            out = []
            for f in files:
                lfs = repo.is_lfs(f["path"]) if f["path"] in repo.files else (
                    f["path"].endswith((".gguf", ".safetensors", ".bin")) or f["size"] > 10_000)
                old = repo.files.get(f["path"])
                oid = None if old is None else (hashlib.sha256(old).hexdigest() if lfs else git_blob_id(old))
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
            return handler._json({"files": out})
        if rest[:1] == ["commit"]:
            return _commit(handler, hub, repo, body)
        if rest[:1] == ["settings"]:
            repo.gated = bool(json.loads(body or b"{}").get("gated"))
            return handler._json({})
    if len(parts) >= 4 and parts[-4:-1] == ["info", "lfs", "objects"] and parts[-1] == "batch":
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return handler._json({"transfer": "basic", "objects": objects})
    if parts[:1] == ["lfs-upload"] and handler.command == "PUT":
        oid = parts[1]
        if hub.failing_uploads > 0:
            hub.failing_uploads -= 1
            return handler._error(400, "", "upload interrupted")
        if hashlib.sha256(body).hexdigest() != oid:
            return handler._error(400, "", "sha256 mismatch")
        hub.lfs_objects[oid] = body
        return handler._send(200, b"")
    handler._send(404, b"not found", ctype="text/plain")


def _commit(handler, hub, repo: Repo, body: bytes):
    files = dict(repo.files)
    summary = ""
    for line in body.splitlines():
        item = json.loads(line)
        key, value = item["key"], item["value"]
        if key == "header":
            summary = value.get("summary", "")
        elif key == "file":
            files[value["path"]] = base64.b64decode(value["content"])
        elif key == "lfsFile":
            if value["oid"] not in hub.lfs_objects:
                return handler._error(422, "", f"LFS object {value['oid']} was never uploaded")
            files[value["path"]] = hub.lfs_objects[value["oid"]]
        elif key == "deletedFile":
            files.pop(value["path"], None)
    repo.files = files
    repo.sha = hashlib.sha1((repo.sha + summary + str(len(hub.commits))).encode()).hexdigest()
    hub.commits.append({"repo": repo.repo_id, "summary": summary, "files": sorted(files)})
    return handler._json({"commitUrl": f"{hub.url}/{repo.repo_id}/commit/{repo.sha}", "commitOid": repo.sha,
                          "pullRequestUrl": None})
