"""The Chat view: :class:`ChatView` (view.py), loading its model (model.py), the transcript (transcript.py), the
message box (panels.py) and saved conversations (saved.py)."""

from app.views.chat.view import ChatView  # noqa: F401
