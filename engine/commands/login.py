"""nibble login: give Nibble your Hugging Face token once (for gated and private models)."""

from __future__ import annotations

import getpass
import sys

NAME = "login"
HELP = "Store your Hugging Face token for gated and private models (typed without echo, never printed)"
ORDER = 13


def add_arguments(p):
    p.add_argument("--stdin", action="store_true", help="read the token from standard input instead of a prompt")
    p.add_argument("--status", action="store_true", help="say which token Nibble would use (masked)")
    p.add_argument("--logout", action="store_true", help="remove the stored token")


def run(args) -> int:
    from engine import hub

    if args.status:
        st = hub.token_status(check_online=not hub.is_offline())
        if not st.present:
            print("no Hugging Face token: run `nibble login` or set HF_TOKEN")
        else:
            who = f" for {st.user}" if st.user else ""
            print(f"token {st.masked} from {st.source}{who}")
        return 0
    if args.logout:
        hub.forget_token()
        print("stored token removed" + (" (HF_TOKEN is still set in the environment)" if hub.token_status().source == "HF_TOKEN" else ""))
        return 0
    if args.stdin:
        token = sys.stdin.readline()
    else:
        token = getpass.getpass("Hugging Face token (from https://huggingface.co/settings/tokens): ")
    user = hub.save_token(token)
    print(f"token {hub.mask_token(token.strip())} saved; logged in as {user}")
    return 0
