"""Start the desktop app: ``nibble`` with no arguments, or ``nibble gui``."""

from __future__ import annotations

import sys


def create_app(argv: list[str] | None = None):
    """The QApplication with Nibble's names (QSettings uses them), HiDPI policy and style."""
    from PySide6.QtCore import QCoreApplication, Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app.style import apply_style

    # Worker threads (chat, compare, analysis) hand the interpreter back to the UI thread every
    # millisecond instead of every five, so a busy worker cannot hold the UI up.
    sys.setswitchinterval(0.001)
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(["nibble", *(argv or [])])
    QCoreApplication.setOrganizationName("Nibble")
    QCoreApplication.setApplicationName("Nibble")
    QGuiApplication.setApplicationDisplayName("Nibble")
    apply_style(app)
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True)
    return app


def settle_startup_objects() -> None:
    """Once the window is up: what start-up made (modules, Qt wrappers, the views) lives as long as the app,
    so Python's cycle collector stops going over it. A full collection otherwise walks every one of those
    objects while holding the interpreter (about 50-90 ms here), from whichever thread triggers it: a stall of
    the UI thread every so often."""
    import gc

    gc.collect()
    gc.freeze()


def run_gui(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if argv and argv[0] in ("-h", "--help"):
        print("usage: nibble [gui]\n\nStarts the Nibble desktop app. `nibble --help` lists the commands.")
        return 0
    app = create_app(argv)
    from app.window import MainWindow

    win = MainWindow()
    win.show()
    settle_startup_objects()
    code = int(app.exec())
    from PySide6.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(10000)
    return code


if __name__ == "__main__":
    raise SystemExit(run_gui(sys.argv[1:]))
