import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Nibble's library (outputs, figures) of the whole test run lives in a temporary folder, never the user's.
os.environ.setdefault("NIBBLE_HOME", __import__("tempfile").mkdtemp(prefix="nibble-test-home-"))

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
