"""``nibble chat MODEL``: talk to a model in the terminal, streamed, with its own chat template."""

from __future__ import annotations

import sys

from engine.core.errors import NibbleError
from engine.commands import _args
from engine.commands._models import add_runtime_arguments, open_from_args, quiet_libraries

NAME = "chat"
HELP = "chat with a model (original, GGUF or AWQ) in the terminal"
ORDER = 42

HELP_TEXT = "commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit. " \
            "Ctrl-C stops a reply; Ctrl-C or Ctrl-D at the prompt quits."


def add_arguments(parser) -> None:
    parser.add_argument("model", help="Hugging Face folder, .gguf file or AWQ folder")
    parser.add_argument("--system", type=_args.text, default=None, metavar="TEXT", help="system prompt")
    parser.add_argument("--temperature", type=_args.temperature, default=0.7, help="0 for greedy (default 0.7)")
    parser.add_argument("--top-p", type=_args.probability, default=0.95, help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--max-tokens", type=_args.positive_int("tokens"), default=512, help="longest reply (default 512)")
    parser.add_argument("--stop", type=_args.text, action="append", default=[], metavar="TEXT", help="stop a reply at TEXT (repeatable)")
    parser.add_argument("--seed", type=_args.seed, default=None, help="sampling seed, for repeatable replies")
    add_runtime_arguments(parser, ctx_default=4096)


def run(args) -> int:
    from engine.runtime.chat import ChatSettings, Conversation

    quiet_libraries()
    settings = ChatSettings(system_prompt=args.system, temperature=args.temperature, top_p=args.top_p,
                            max_tokens=args.max_tokens, stop=tuple(args.stop), seed=args.seed)
    interactive = sys.stdin.isatty()
    with open_from_args(args.model, args) as rt:
        conv = Conversation(rt, settings)
        for notice in conv.notices:
            print(f"nibble: note: {notice}", file=sys.stderr)
        if interactive:
            print(f"{rt.name} ({rt.kind}, {rt.device}). {HELP_TEXT}", file=sys.stderr)
        while True:
            try:
                line = input("> " if interactive else "")
                line.encode("utf-8")  # undecodable bytes come as surrogates in a C locale
            except (EOFError, KeyboardInterrupt):
                if interactive:
                    print(file=sys.stderr)
                return 0
            except (UnicodeDecodeError, UnicodeEncodeError):
                if interactive:
                    print("(that line was not UTF-8 text; type it again)", file=sys.stderr)
                    continue
                raise NibbleError("standard input is not UTF-8 text; convert it (e.g. iconv -t UTF-8) "
                                  "and pipe it again") from None
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                conv.reset()
                print("(conversation cleared)", file=sys.stderr)
                continue
            if text.startswith("/system"):
                conv.settings.system_prompt = text[len("/system"):].strip() or None
                print("(system prompt set)" if conv.settings.system_prompt else "(system prompt removed)",
                      file=sys.stderr)
                continue
            if text in ("/help", "/?"):
                print(HELP_TEXT, file=sys.stderr)
                continue
            conv.send(text, on_token=lambda piece: print(piece, end="", flush=True))
            print(flush=True)
            if conv.last_finish == "cancelled":
                print("(stopped)", file=sys.stderr)
            elif conv.last_finish == "context":
                print("(the context is full: /reset to start again, or raise --ctx)", file=sys.stderr)
