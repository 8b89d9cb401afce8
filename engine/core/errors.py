"""The one exception type for problems a user can cause and fix."""


class NibbleError(Exception):
    """A user-fixable problem. The message is one line, names the file or setting, and says what to do."""


class Cancelled(Exception):
    """The job was cancelled by the user; nothing was left behind. Not an error: nothing needs fixing."""

    def __init__(self, message: str = "cancelled; no output was written"):
        super().__init__(message)


def check_at_least(value, minimum: int, what: str, *, optional: bool = False) -> None:
    """Refuse ``value`` below ``minimum`` in words both front ends show: "context length -1 must be at least 1".

    ``what`` names the setting as a user knows it; ``optional``: None means "the default" and passes.
    """
    if value is None and optional:
        return
    if value is None or value < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise NibbleError(f"{what} {value} must be {bound}")
