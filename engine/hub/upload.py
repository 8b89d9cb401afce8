"""Publishing files to a Hub model repository: create it (or update one the user owns), upload the files in
one commit, and set who may see it.

The user's own token is required and checked first (who they are, whether it may write, whether the repository
is theirs or their organisation's), so nothing is sent to a repository that is not theirs. Large files go
through ``huggingface_hub``'s upload protocol: files the Hub already holds (from an upload that was cut off
before its commit) are not sent again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from engine.core.errors import NibbleError
from engine.core.progress import Reporter
from engine.hub.common import TIMEOUT, endpoint, hub_errors, require_online, scrub
from engine.models.resolve import looks_like_repo_id


@dataclass(frozen=True)
class Account:
    name: str
    orgs: tuple[str, ...]
    can_write: bool


@dataclass(frozen=True)
class Published:
    repo_id: str
    url: str
    commit: str
    files: tuple[str, ...]
    created: bool
    private: bool


def _account(token: str) -> Account:
    resp = get_session().get(f"{endpoint()}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=TIMEOUT)
    hf_raise_for_status(resp)
    data = resp.json()
    role = ((data.get("auth") or {}).get("accessToken") or {}).get("role", "write")
    orgs = tuple(o.get("name", "") for o in data.get("orgs") or [] if o.get("name"))
    return Account(name=data.get("name", ""), orgs=orgs, can_write=role in ("write", "admin", "fineGrained"))


def check_target(repo_id: str, token: str | None = None) -> tuple[str, Account]:
    """The token to publish with and its account, or a one-line error: no token, a read-only token, or a
    repository in a namespace that is not the user's or one of their organisations'."""
    if not looks_like_repo_id(repo_id) or "/" not in repo_id or "@" in repo_id:
        raise NibbleError(f"repository '{repo_id}' is not a Hub model name; write it as USER/NAME")
    require_online()
    token = token or get_token()
    if not token:
        raise NibbleError("publishing needs your Hugging Face token with write access: run `nibble login` or set "
                          "HF_TOKEN (create one at the Hub's settings/tokens page)")
    with hub_errors(repo_id, token):
        account = _account(token)
    if not account.can_write:
        raise NibbleError(f"the token for {account.name} is read-only; create a token with write access at "
                          f"{endpoint()}/settings/tokens and log in with it")
    owner = repo_id.split("/")[0]
    if owner != account.name and owner not in account.orgs:
        raise NibbleError(f"{repo_id} belongs to '{owner}', not to {account.name} or their organisations; "
                          f"publish to {account.name}/{repo_id.split('/')[1]} instead")
    return token, account


def publish_files(repo_id: str, files: list[tuple[Path, str]], *, private: bool = False, gated: bool = False,
                  message: str = "Upload quantized model made with Nibble", token: str | None = None,
                  reporter: Reporter | None = None) -> Published:
    """Create (or update) ``repo_id`` and upload ``files`` (local path, path in the repository) in one commit."""
    reporter = reporter or Reporter()
    token, _account_ = check_target(repo_id, token)
    api = HfApi(endpoint=endpoint(), token=token)
    for local, _ in files:
        if not Path(local).is_file():
            raise NibbleError(f"{local} is missing; nothing was uploaded")
    created = False
    with hub_errors(repo_id, token):
        try:
            api.repo_info(repo_id, repo_type="model", timeout=TIMEOUT)
        except RepositoryNotFoundError:
            reporter.log(f"creating {repo_id}" + (" (private)" if private else ""))
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            created = True
        reporter.check_cancel()
        total = sum(Path(p).stat().st_size for p, _ in files)
        reporter.progress(0, total, f"uploading {len(files)} file(s) to {repo_id}")
        ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.fspath(local)) for local, name in files]
        try:
            info = api.create_commit(repo_id, operations=ops, commit_message=message, repo_type="model")
        except (HfHubHTTPError, RuntimeError, ValueError) as exc:
            raise explain_upload_error(exc, repo_id, token) from None
        reporter.progress(total, total, f"uploaded to {repo_id}")
        if gated:
            api.update_repo_settings(repo_id, gated="auto", repo_type="model")
    return Published(repo_id=repo_id, url=f"{endpoint()}/{repo_id}", commit=info.oid,
                     files=tuple(name for _, name in files), created=created, private=private)


def explain_upload_error(exc: Exception, repo_id: str, token: str | None) -> NibbleError:
    """A one-line message for an upload that failed part-way or that the Hub refused."""
    cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ is not None else exc
    status = getattr(getattr(cause, "response", None), "status_code", None)
    if status == 403:
        return NibbleError(f"the Hub refused to write to {repo_id} (status 403): the token may not write to it; "
                           "nothing local was changed")
    what = str(exc).splitlines()[0] if isinstance(exc, RuntimeError) else "the upload failed"
    reason = f"status {status}" if status else type(cause).__name__
    return NibbleError(scrub(f"{what.rstrip('.')} ({reason}); nothing was committed to {repo_id} and nothing local "
                             "was changed: run the same command again to resume (files already sent are skipped)",
                             token))
