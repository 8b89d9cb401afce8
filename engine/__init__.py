"""Nibble's engine: every job the app does, headless. Never imports Qt."""

__version__ = "0.1.0"
