"""Step 4 of the Quantize wizard: where the result is, what it took, and how to run it elsewhere."""

from __future__ import annotations

import pathlib
import shlex

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.jobs import format_seconds
from app.services import AWQ, GGUF, QuantizeOutcome, human_bytes
from app.state import AppState, ModelEntry
from app.views.output_actions import OutputActions, show_in_file_manager
from app.views.quantize.mix_check import MixCheckPanel
from app.widgets import Banner, path_size


def run_commands(path: str, kind: str) -> dict[str, str]:
    """Commands that run the output elsewhere: llama.cpp and Ollama for GGUF, transformers for AWQ."""
    q = shlex.quote(path)
    if kind == AWQ:
        return {
            "transformers": (
                "python -c \"from transformers import AutoModelForCausalLM, AutoTokenizer; "
                f"m = AutoModelForCausalLM.from_pretrained({path!r}); print(m)\""
            ),
            "vLLM": f"vllm serve {q} --quantization awq",
        }
    stem = pathlib.Path(path).stem.lower().replace("_", "-").replace(".", "-")
    return {
        "llama.cpp": f"llama-cli -m {q} -cnv",
        "Ollama": f"printf 'FROM %s\\n' {q} > Modelfile && ollama create {stem} -f Modelfile && ollama run {stem}",
    }


class DonePage(QWidget):
    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.output: ModelEntry | None = None
        self.original: ModelEntry | None = None
        lay = QVBoxLayout(self)
        self.headline = QLabel("<h2>Done</h2>")
        lay.addWidget(self.headline)
        form = QFormLayout()
        self.path_label = QLabel()
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setWordWrap(True)
        self.size_label = QLabel()
        self.time_label = QLabel()
        form.addRow("File:", self.path_label)
        form.addRow("Size:", self.size_label)
        form.addRow("Time taken:", self.time_label)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.chat_btn = QPushButton("Open in Chat")
        self.compare_btn = QPushButton("Compare with the original")
        self.analyse_btn = QPushButton("Analyse")
        self.show_btn = QPushButton("Show in file manager")
        for b in (self.chat_btn, self.compare_btn, self.analyse_btn, self.show_btn):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        share = QHBoxLayout()
        self.publish_btn = QPushButton("Publish to the Hub…")
        self.ollama_btn = QPushButton("Use in Ollama")
        self.lmstudio_btn = QPushButton("Use in LM Studio")
        for b in (self.publish_btn, self.ollama_btn, self.lmstudio_btn):
            share.addWidget(b)
        share.addStretch(1)
        lay.addLayout(share)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.actions = OutputActions(self, self.banner)
        self.cmd_box = QGroupBox("Run it elsewhere")
        self.cmd_layout = QFormLayout(self.cmd_box)
        lay.addWidget(self.cmd_box)
        self.mix_check = MixCheckPanel()
        lay.addWidget(self.mix_check)
        lay.addStretch(1)
        self.chat_btn.clicked.connect(lambda: self.state.open_in("Chat", model=self.output.path))
        self.compare_btn.clicked.connect(
            lambda: self.state.open_in("Compare", original=self.original.path, quantized=self.output.path)
        )
        self.analyse_btn.clicked.connect(
            lambda: self.state.open_in("Analysis", original=self.original.path, quantized=self.output.path)
        )
        self.show_btn.clicked.connect(self.show_in_file_manager)
        self.publish_btn.clicked.connect(lambda: self.actions.publish(self.output.path))
        self.ollama_btn.clicked.connect(lambda: self.actions.use_in_ollama(self.output.path))
        self.lmstudio_btn.clicked.connect(lambda: self.actions.use_in_lmstudio(self.output.path))

    def show_result(self, original: ModelEntry, output: ModelEntry, result: QuantizeOutcome) -> None:
        self.original, self.output = original, output
        p = pathlib.Path(output.path)
        size = result.file_bytes if result.file_bytes is not None else path_size(p)
        self.headline.setText(f"<h2>{output.qtype} of {pathlib.Path(original.path).name} is ready</h2>")
        self.path_label.setText(str(p))
        self.size_label.setText(human_bytes(size))
        self.time_label.setText(format_seconds(result.elapsed))
        self.mix_check.show_for(original.path, str(p), result.type)
        self.banner.clear()
        for b in (self.ollama_btn, self.lmstudio_btn):
            b.setEnabled(output.kind == GGUF)
        while self.cmd_layout.rowCount():
            self.cmd_layout.removeRow(0)
        self.commands = run_commands(str(p), output.kind)
        for name, cmd in self.commands.items():
            line = QLineEdit(cmd, readOnly=True)
            copy = QPushButton("Copy")
            copy.clicked.connect(lambda _=False, c=cmd: QGuiApplication.clipboard().setText(c))
            row = QHBoxLayout()
            row.addWidget(line, 1)
            row.addWidget(copy)
            self.cmd_layout.addRow(f"{name}:", row)

    def show_in_file_manager(self) -> None:
        if self.output:
            show_in_file_manager(self.output.path, self.banner)
