"""What every CLI error path promises: exit status 2 and the message on exactly one line of stderr.

The app shows the last ``nibble: ...`` line of a failed job; a message split over two lines loses its second
half there (usually the part that says what to do), so the tests hold every error path to one line.
"""

from __future__ import annotations

import signal
import subprocess


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` for a child that a test sends Ctrl-C (SIGINT) to: SIGINT back to its default, as in a
    process started from a terminal. A suite run as a background job of a script (``pytest &``) inherits
    SIGINT ignored, and Python then leaves it ignored in every child, so the interrupt would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a failed ``python -m engine`` run, checked; ``needles`` must all be in it."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    assert line.startswith("nibble: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line
