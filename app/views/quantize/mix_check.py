"""The done page's measurement of a mix: its KL divergence against the original beside that of llama.cpp's
uniform type of the same budget (quantized with the same importance matrix, measured on the same text)."""

from __future__ import annotations

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from app import services
from app.jobs import run_in_thread
from app.services import format_kld as _kld, human_bytes


class MixCheckPanel(QGroupBox):
    """Shown for a mix: one button measures it against the uniform type of its size."""

    def __init__(self, parent=None):
        super().__init__("What the mix bought", parent)
        self.original: str | None = None
        self.mix_file: str | None = None
        self.calibration: str | None = None
        self.check = None
        self._job = None
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.measure = QPushButton("Measure against the uniform type of the same size")
        self.cancel = QPushButton("Cancel")
        self.cancel.hide()
        row.addWidget(self.measure)
        row.addWidget(self.cancel)
        row.addStretch(1)
        lay.addLayout(row)
        self.result = QLabel("Quantizes the largest uniform type that fits the same budget (with the same "
                             "importance matrix) and measures both against the original.")
        self.result.setWordWrap(True)
        lay.addWidget(self.result)
        self.measure.clicked.connect(self.start)
        self.cancel.clicked.connect(self.stop)
        self.hide()

    def show_for(self, original: str | None, output: str, qtype: str, calibration: str | None = None) -> None:
        """Show the panel for a mix (``qtype`` "mix"), hide it for anything else."""
        self.stop()
        self.original, self.mix_file, self.calibration, self.check = original, output, calibration, None
        self.setVisible(qtype == "mix" and original is not None)
        self.measure.setEnabled(True)

    def start(self) -> None:
        if not self.original or not self.mix_file:
            return
        self.measure.setEnabled(False)
        self.cancel.show()
        self.result.setText("Quantizing the uniform type and measuring both against the original…")
        mix = self.mix_file
        self._job = run_in_thread(
            services.check_mix, self.original, mix, pass_reporter=True, calibration=self.calibration,
            on_result=lambda c: self._done(mix, c), on_error=self.result.setText,
            on_progress=lambda _d, _t, m: m and self.result.setText(m[:1].upper() + m[1:] + "…"),
            on_cancelled=lambda: self.result.setText("Cancelled; nothing was kept."), on_end=self._ended)

    def stop(self) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel()

    def _ended(self) -> None:
        self.measure.setEnabled(True)
        self.cancel.hide()

    def _done(self, mix: str, c) -> None:
        if mix != self.mix_file:
            return
        self.check = c
        better = "lower" if c.ratio < 1 else "higher"
        self.result.setText(
            f"<table cellspacing=6><tr><th></th><th>file</th><th>KL divergence</th><th>99th percentile</th>"
            f"<th>same top token</th></tr>"
            f"<tr><td><b>mix</b></td><td>{human_bytes(c.mix_bytes)}</td><td><b>{_kld(c.mix_kld)}</b></td>"
            f"<td>{_kld(c.mix_kld_p99)}</td><td>{c.mix_top1:.2%}</td></tr>"
            f"<tr><td>{c.uniform_type}</td><td>{human_bytes(c.uniform_bytes)}</td><td>{_kld(c.uniform_kld)}</td>"
            f"<td>{_kld(c.uniform_kld_p99)}</td><td>{c.uniform_top1:.2%}</td></tr></table>"
            f"The mix's KL divergence is {c.ratio:.2f}× the uniform {c.uniform_type}'s ({better}), "
            f"over {c.tokens:,} tokens of the evaluation text.")
