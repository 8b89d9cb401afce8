"""The one exception type for problems a user can cause and fix."""


class NibbleError(Exception):
    """A user-fixable problem. The message is one line, names the file or setting, and says what to do."""


class Cancelled(Exception):
    """The job was cancelled by the user; nothing was left behind. Not an error: nothing needs fixing."""

    def __init__(self, message: str = "cancelled; no output was written"):
        super().__init__(message)
