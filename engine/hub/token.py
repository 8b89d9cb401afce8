"""The user's Hub token: status, save, forget. Never printed or logged; messages show it masked."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from engine.core.errors import NibbleError
from engine.hub.common import endpoint, hub_errors, mask_token, require_online, scrub

#: Seconds to wait for the Hub to answer before calling it unreachable.
TIMEOUT = 10.0


log = logging.getLogger(__name__)


log = logging.getLogger(__name__)


@dataclass
class TokenStatus:
    present: bool
    source: str | None  # "HF_TOKEN" or "stored login"
    masked: str | None
    user: str | None = None


def token_status(*, check_online: bool = False) -> TokenStatus:
    """Which Hub token Nibble would use, masked. ``check_online`` asks the Hub whose it is."""
    from huggingface_hub import get_token

    token = get_token()
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    source = None if not token else ("HF_TOKEN" if env and env.strip() == token else "stored login")
    status = TokenStatus(present=bool(token), source=source, masked=mask_token(token) or None)
    if check_online and token:
        require_online()
        with hub_errors(None, token):
            status.user = _whoami(token)
    return status


def _whoami(token: str) -> str:
    """The Hub user a token belongs to (raises the Hub's 401 for a bad token)."""
    response = get_session().get(
        f"{endpoint()}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=TIMEOUT
    )
    hf_raise_for_status(response)
    return response.json()["name"]


def save_token(token: str) -> str:
    """Check ``token`` with the Hub and store it with ``huggingface_hub``'s login; returns the user name."""
    from huggingface_hub import login

    token = (token or "").strip()
    if not token:
        raise NibbleError("no token given: copy a read token from https://huggingface.co/settings/tokens")
    if any(ch.isspace() for ch in token):
        raise NibbleError("that does not look like a Hugging Face token (it contains spaces); paste the token only")
    require_online()
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # login() logs where it saved things; keep the console quiet
    try:
        with hub_errors(None, token):
            user = _whoami(token)  # fails fast (short timeout) before login() asks again
            try:
                login(token=token, add_to_git_credential=False)
            except ValueError as exc:  # organisation tokens, invalid tokens
                raise NibbleError(f"the Hub refused the token {mask_token(token)}: {scrub(str(exc), token)}") from None
    finally:
        hub_logger.setLevel(level)
    return user


def forget_token() -> None:
    """Remove the stored login (HF_TOKEN in the environment is not touched)."""
    from huggingface_hub import logout

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        logout()
    finally:
        hub_logger.setLevel(level)


