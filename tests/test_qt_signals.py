"""The Qt binding Nibble runs on keeps Python's reference counts straight across signals.

PySide6 6.12.0 dropped a reference to ``True`` (and ``None``) on every signal emitted from Python: the app's
jobs, chat stream and progress emit thousands, and after a long session Python aborted (``bool_dealloc``).
This checks the installed binding directly, with far fewer emits than it takes to crash.
"""

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    text = Signal(str)
    figures = Signal(int, int, str, float)
    nothing = Signal()


def test_emitting_signals_leaves_reference_counts_alone(qapp):
    e = _Emitter()
    got = []
    e.text.connect(lambda s: got.append(s))
    e.figures.connect(lambda *a: got.append(a))
    e.nothing.connect(lambda: got.append(None))
    before = (sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None))
    for i in range(20):
        e.text.emit("piece")
        e.figures.emit(i, 20, "message", 1.5)
        e.nothing.emit()
    after = (sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None))
    assert len(got) == 60
    assert after[0] - before[0] == 0 and after[1] - before[1] == 0, (before, after)
    assert abs(after[2] - before[2]) < 50, (before, after)  # None: only the list's own entries may hold it
