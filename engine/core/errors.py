"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations


class NibbleError(Exception):
    """A user-fixable problem. The message is one line, names the file or setting, and says what to do.

    ``setting`` names the setting at fault in words both front ends know ("output path", "context length",
    "device", ...; see :data:`SETTINGS`): the CLI adds its option to the message, the app points at its field.
    The message itself speaks of settings in words, never of command-line options.
    """

    def __init__(self, message: str = "", *, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class Cancelled(Exception):
    """The job was cancelled by the user; nothing was left behind. Not an error: nothing needs fixing."""

    def __init__(self, message: str = "cancelled; no output was written"):
        super().__init__(message)


# The settings an engine message may name. Each front end maps these words to its own control: the CLI
# to an option (engine.commands.cli), the app to a field label.
SETTINGS = (
    "quant type", "output path", "calibration text", "importance matrix", "saved importance matrix", "context length", "KV cache type",
    "GPU layers", "device", "bits", "group size", "calibration samples", "sample length", "revision",
    "threads", "importance matrix windows", "recipe", "target size", "target bits per weight", "task file",
)


def check_at_least(value, minimum: int, what: str, *, optional: bool = False, setting: str | None = None) -> None:
    """Refuse ``value`` below ``minimum`` in words both front ends show: "context length -1 must be at least 1".

    ``what`` names the setting as a user knows it; ``optional``: None means "the default" and passes;
    ``setting``: the entry of :data:`SETTINGS` it is, so each front end can point at its own control (by
    default ``what`` itself, when it is one).
    """
    if value is None and optional:
        return
    if value is None or value < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise NibbleError(f"{what} {value} must be {bound}",
                          setting=setting or (what if what in SETTINGS else None))
