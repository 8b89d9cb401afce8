"""Nibble's desktop app: PySide6 + pyqtgraph views over the engine."""
