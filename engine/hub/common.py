"""What every Hub call shares: the endpoint, offline mode, error translation and token masking."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import PurePosixPath

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from engine.core.errors import Cancelled, NibbleError

#: Seconds to wait for the Hub to answer before calling it unreachable.
TIMEOUT = 10.0

log = logging.getLogger(__name__)


def mask_token(token: str | None) -> str:
    if not token:
        return ""
    return f"{token[:3]}…{token[-4:]}" if len(token) >= 12 else "****"


def is_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in ("1", "ON", "YES", "TRUE")


def _offline_error(reason: str) -> NibbleError:
    return NibbleError(f"offline: {reason}; models in the local cache and local folders still work")


def require_online() -> None:
    if is_offline():
        raise _offline_error("HF_HUB_OFFLINE is set, so Nibble does not contact the Hub")


# What the Hub sends, and nothing else is turned into a path: a commit is 40 hex digits, an ETag a git blob id
# (40) or an LFS sha256 (64), a file name a relative path of ordinary parts.
_COMMIT = re.compile(r"[0-9a-f]{40}")
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_NAME_PART = re.compile(r"[\w.\-+=@ ()\[\],~]+")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}(/[A-Za-z0-9][\w.\-]{0,95})?")
_REVISION = re.compile(r"[\w.\-]+(/[\w.\-]+)*")


def _untrusted(what: str, repo_id: str | None) -> NibbleError:
    return NibbleError(f"{endpoint()} sent {what} for {repo_id or 'the request'} that the Hugging Face Hub never "
                       "sends; nothing was saved: check HF_ENDPOINT (a mirror or proxy may be broken or hostile)")


def check_repo_id(repo_id: str) -> str:
    """A model id as the user typed it: ``owner/name``; refused before it reaches a URL or a path."""
    text = str(repo_id).strip()
    if not _REPO_ID.fullmatch(text) or ".." in text or "--" in text or text.endswith((".", "-")):
        raise NibbleError(f"'{repo_id}' is not a Hub model id; write it as owner/name, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    return text


def check_revision(revision: str | None) -> str | None:
    if revision is None:
        return None
    if not _REVISION.fullmatch(revision) or any(part in ("", ".", "..") for part in revision.split("/")):
        raise NibbleError(f"revision {revision}: not a branch, tag or commit name; leave it out to use main",
                          setting="revision")
    return revision


def check_commit(sha: str | None, repo_id: str) -> str:
    if not isinstance(sha, str) or not _COMMIT.fullmatch(sha):
        raise _untrusted(f"a commit id {str(sha)[:80]!r}", repo_id)
    return sha


def check_etag(etag: str | None, repo_id: str, name: str) -> str:
    """The checksum a file is stored and verified under (``blobs/<etag>``)."""
    if not isinstance(etag, str) or not _ETAG.fullmatch(etag):
        raise _untrusted(f"a checksum (ETag) {str(etag)[:80]!r} for {name}", repo_id)
    return etag


def check_file_name(name: str, repo_id: str) -> str:
    """A file name from the Hub's listing or an index: relative, ordinary parts, no way out of the snapshot."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if (not parts or name.startswith("/") or "\\" in name or len(name) > 1000
            or any(p in (".", "..") or not _NAME_PART.fullmatch(p) for p in parts)):
        raise _untrusted(f"a file name {str(name)[:80]!r}", repo_id)
    return name


def endpoint() -> str:
    return constants.ENDPOINT


def api_client(token: str | None) -> HfApi:
    return HfApi(endpoint=endpoint(), token=token or None)


def scrub(text: str, *tokens: str | None) -> str:
    from huggingface_hub import get_token

    for tok in (*tokens, get_token()):
        if tok:
            text = text.replace(tok, mask_token(tok))
    return text


def token_hint() -> str:
    return "set HF_TOKEN, run `nibble login`, or paste a token in Nibble's settings"


@contextlib.contextmanager
def hub_errors(repo_id: str | None, token: str | None = None, revision: str | None = None):
    """Turn what ``huggingface_hub`` and the network raise into one-line messages for the user."""
    try:
        yield
    except (NibbleError, Cancelled, KeyboardInterrupt):
        raise
    except OfflineModeIsEnabled:
        raise _offline_error("HF_HUB_OFFLINE is set, so Nibble does not contact the Hub") from None
    except GatedRepoError:
        page = f"{endpoint()}/{repo_id}"
        from huggingface_hub import get_token

        if token or get_token():
            msg = (f"{repo_id} is gated and your token has no access to it yet: accept its terms at {page} "
                   "with the account that owns the token, then try again")
        else:
            msg = f"{repo_id} is gated: accept its terms at {page}, then give Nibble your Hugging Face token ({token_hint()})"
        raise NibbleError(msg) from None
    except RevisionNotFoundError:
        raise NibbleError(f"{repo_id} has no revision '{revision}'; leave the revision out to use main",
                          setting="revision") from None
    except RepositoryNotFoundError:
        raise NibbleError(
            f"no model '{repo_id}' on the Hugging Face Hub: check the spelling (owner/name); "
            f"a private model also needs your token ({token_hint()})"
        ) from None
    except RemoteEntryNotFoundError as exc:
        raise NibbleError(scrub(f"{repo_id}: a file is missing on the Hub ({exc.response.url.path})", token)) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            shown = f" {mask_token(token)}" if token else ""
            raise NibbleError(
                f"the Hub refused the token{shown} (status 401): copy a fresh read token from "
                f"{endpoint()}/settings/tokens, then {token_hint()}"
            ) from None
        first = scrub(str(exc), token).splitlines()[0]
        raise NibbleError(f"the Hub answered {status} for {repo_id or 'the request'}: {first}; try again later") from None
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        reason = type(exc).__name__ if isinstance(exc, httpx2.TransportError) else "connection failed"
        raise _offline_error(f"cannot reach {endpoint()} ({reason})") from None
    except httpx2.HTTPError as exc:  # too many redirects, an undecodable answer
        raise NibbleError(f"{endpoint()} gave an answer for {repo_id or 'the request'} that cannot be used "
                          f"({type(exc).__name__}); try again later or check HF_ENDPOINT") from None
    except (ValueError, KeyError, TypeError) as exc:  # an answer whose JSON is not what the Hub sends
        raise NibbleError(f"{endpoint()} gave an answer for {repo_id or 'the request'} that is not what the Hub "
                          f"sends ({type(exc).__name__}); try again later or check HF_ENDPOINT") from None


