"""The five views of the main window."""
