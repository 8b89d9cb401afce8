"""The Chat view: :class:`ChatView` (view.py), the transcript (transcript.py), the message box and saved
conversations (panels.py)."""

from app.views.chat.view import ChatView  # noqa: F401
