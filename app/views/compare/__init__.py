"""Compare: one prompt, original and quantized side by side, first diverging token highlighted, the KLD heat
strip along the original's answer; below, the full evaluation, the context sweep with the memory at each KV
cache type, a task set, and speed and memory like with like."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import ProcessJob, engine_argv, run_in_thread
from app.services import (
    AWQ,
    GGUF,
    ORIGINAL,
    CompareOutcome,
    EvalFigures,
    format_kld,
    human_bytes,
)
from app.settings import COMPARE_MAX_TOKENS, COMPARE_PROMPT
from app.state import AppState, ModelEntry, kind_of, same_path
from app.style import plot_colors
from app.views import View
from app.views.compare.context import ContextPanel
from app.views.compare.heat import HeatLegend, HeatStrip
from app.views.compare.speed import SpeedPanel
from app.views.compare.tasks import TaskSetPanel
from app.widgets import Banner, ModelPicker


def marked_piece(pieces: list[str], diverge_at: int | None) -> int | None:
    """The piece to mark for a divergence at token ``diverge_at``: that token's text, or where the token
    ends in the middle of a character, the piece that completes the character."""
    if diverge_at is None:
        return None
    return next((i for i in range(diverge_at, len(pieces)) if pieces[i]), diverge_at)


def highlight_pieces(pieces: list[str], diverge_at: int | None, colour: str) -> str:
    """HTML of the generated pieces, the first diverging one marked."""
    diverge_at = marked_piece(pieces, diverge_at)
    out = []
    for i, p in enumerate(pieces):
        text = html.escape(p).replace("\n", "<br>")
        if diverge_at is not None and i == diverge_at:
            out.append(f'<span style="background-color:{colour}; font-weight:bold" title="first divergence">{text}</span>')
        else:
            out.append(text)
    return "".join(out)


class SidePanel(QGroupBox):
    def __init__(self, title: str, parent=None, heat: bool = False):
        super().__init__(title, parent)
        lay = QVBoxLayout(self)
        self.text = QTextBrowser()
        lay.addWidget(self.text, 1)
        self.heat = HeatStrip() if heat else None
        if heat:
            lay.addWidget(self.heat)
            lay.addWidget(HeatLegend())
        self.stats = QLabel("—")
        lay.addWidget(self.stats)


class CompareView(View):
    compared = Signal(object)
    evaluated = Signal(object)

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.job = None
        self.eval_job: ProcessJob | None = None
        self.result: CompareOutcome | None = None
        self.eval_result: EvalFigures | None = None
        self._run = 0  # bumped on every change of pair: results of an older run are dropped

        lay = QVBoxLayout(self)
        grid = QGridLayout()
        grid.addWidget(QLabel("Original:"), 0, 0)
        self.original = ModelPicker(state, kinds=(ORIGINAL, GGUF))
        grid.addWidget(self.original, 0, 1)
        grid.addWidget(QLabel("Quantized:"), 1, 0)
        self.quantized = ModelPicker(state, kinds=(GGUF, AWQ))
        grid.addWidget(self.quantized, 1, 1)
        lay.addLayout(grid)
        self.prompt = QPlainTextEdit(state.get(COMPARE_PROMPT))
        self.prompt.setMaximumHeight(70)
        lay.addWidget(self.prompt)
        row = QHBoxLayout()
        self.greedy = QCheckBox("Greedy (same tokens if nothing changed)")
        self.greedy.setChecked(True)
        self.max_tokens = QSpinBox(minimum=1, maximum=4096)
        self.max_tokens.setValue(state.get(COMPARE_MAX_TOKENS))
        self.run_btn = QPushButton("Compare")
        self.run_btn.setShortcut("Ctrl+Return")
        row.addWidget(self.greedy)
        row.addWidget(QLabel("Max tokens:"))
        row.addWidget(self.max_tokens)
        row.addStretch(1)
        row.addWidget(self.run_btn)
        lay.addLayout(row)
        self.banner = Banner()
        lay.addWidget(self.banner)
        split = self.split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        sides = QHBoxLayout()
        self.left = SidePanel("Original", heat=True)
        self.right = SidePanel("Quantized")
        sides.addWidget(self.left)
        sides.addWidget(self.right)
        tl.addLayout(sides, 1)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        tl.addWidget(self.summary)
        split.addWidget(top)
        self.tabs = QTabWidget()
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        lay.addWidget(split, 1)

        ebox = QGroupBox("Full evaluation on the default text")
        el = QHBoxLayout(ebox)
        self.eval_btn = QPushButton("Run eval")
        self.eval_progress = QProgressBar()
        self.eval_progress.setValue(0)
        self.eval_table = QFormLayout()
        self.eval_labels = {k: QLabel("—") for k in ("ppl", "kld", "agree")}
        self.eval_table.addRow("Perplexity (original → quantized):", self.eval_labels["ppl"])
        self.eval_table.addRow("KL divergence (mean, 99th pct):", self.eval_labels["kld"])
        self.eval_table.addRow("Same top token:", self.eval_labels["agree"])
        self.eval_chunks = QSpinBox(minimum=0, maximum=10000)
        self.eval_chunks.setSpecialValueText("all windows")
        self.eval_chunks.setSuffix(" windows")
        self.eval_chunks.setToolTip("How many 512-token windows of the text to score (all: the full evaluation)")
        col = QVBoxLayout()
        col.addWidget(self.eval_btn)
        col.addWidget(self.eval_chunks)
        col.addWidget(self.eval_progress)
        el.addLayout(col)
        el.addLayout(self.eval_table, 1)
        self.tabs.addTab(ebox, "Evaluation")
        self.context = ContextPanel(self._paths, self.banner)
        self.tasks = TaskSetPanel(self._paths, self.banner)
        self.speed = SpeedPanel(self._paths, self.banner)
        for panel, title in ((self.context, "Context and KV cache"), (self.tasks, "Task set"),
                             (self.speed, "Speed and memory")):
            scroll = QScrollArea()  # scrolls, rather than squeezes, where the window is short
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QScrollArea.Shape.NoFrame)
            scroll.setWidget(panel)
            self.tabs.addTab(scroll, title)
        self.tasks.open_answer.connect(self.show_answer)

        self.run_btn.clicked.connect(self.run_compare)
        self.eval_btn.clicked.connect(self.run_eval)
        self._pairing = False
        self._pair_to_quantized()
        self._shown_pair = self._pair()
        self.context.reset()
        self.original.changed.connect(self._original_changed)
        self.quantized.changed.connect(self._quantized_changed)

    def open_payload(self, payload: dict) -> None:
        self._pairing = True  # the payload names the pair itself
        try:
            for key, picker in (("original", self.original), ("quantized", self.quantized)):
                if payload.get(key):
                    picker.set_model(ModelEntry(payload[key], kind_of(payload[key])))
        finally:
            self._pairing = False
        self.reset()

    # -- the pair ----------------------------------------------------------------------------------

    def _pair_to_quantized(self) -> None:
        """Select the original the quantized model was made from, where the library knows it."""
        q = self.quantized.current()
        if q is not None and q.origin:
            self.original.select_path(q.origin, emit=False)
        self._note_pair()

    def _quantized_changed(self, _entry) -> None:
        if not self._pairing:
            self._pairing = True
            try:
                self._pair_to_quantized()
            finally:
                self._pairing = False
        self.reset()

    def _original_changed(self, entry) -> None:
        if not self._pairing and entry is not None:
            q = self.quantized.current()
            if q is None or not same_path(q.origin, entry.path):
                made = [m for m in self.state.models() if m.kind in self.quantized.kinds and same_path(m.origin, entry.path)]
                if made:
                    self.quantized.select_path(made[0].path, emit=False)
        self._note_pair()
        self.reset()

    def _note_pair(self) -> None:
        o, q = self.original.current(), self.quantized.current()
        if o is not None and q is not None and q.origin and not same_path(q.origin, o.path):
            self.banner.show_message(f"{q.label} was made from {q.origin}, not from this original; both must share a "
                                     "tokenizer to be compared", "warn")
        else:
            self.banner.clear()

    def _pair(self) -> tuple[str, str]:
        o, q = self.original.current(), self.quantized.current()
        return (o.path if o else "", q.path if q else "")

    def reset(self) -> None:
        """Forget what was shown for the previous pair, and stop work still running for it, when the pair
        changed (a refreshed model list that keeps the pair keeps what is shown)."""
        if self._pair() == self._shown_pair:
            return
        self._shown_pair = self._pair()
        self._run += 1
        if self.job is not None:
            self.job.cancel()
        if self.eval_job is not None and self.eval_job.is_running():
            self.eval_job.cancel()
        self.result = self.eval_result = None
        for panel in (self.left, self.right):
            panel.text.clear()
            panel.stats.setText("—")
        self.left.heat.clear()
        self.summary.clear()
        for panel in (self.context, self.tasks, self.speed):
            panel.reset()
        for label in self.eval_labels.values():
            label.setText("—")
        self.eval_progress.setRange(0, 1)
        self.eval_progress.setValue(0)

    def _paths(self, quiet: bool = False) -> tuple[str, str] | None:
        o, q = self.original.current(), self.quantized.current()
        if o is None or q is None:
            if not quiet:
                self.banner.show_message("Pick an original and a quantized model.")
            return None
        return o.path, q.path

    def show_panel(self, panel: QWidget) -> None:
        """Bring the tab holding ``panel`` (self.context, self.tasks, self.speed) to the front."""
        for i in range(self.tabs.count()):
            page = self.tabs.widget(i)
            if page is panel or (isinstance(page, QScrollArea) and page.widget() is panel):
                self.tabs.setCurrentIndex(i)

    # -- side by side ------------------------------------------------------------------------------

    def run_compare(self) -> None:
        if self.job is not None:
            return
        paths = self._paths()
        if paths is None:
            return
        self.banner.clear()
        prompt = self.prompt.toPlainText().strip() or COMPARE_PROMPT.default
        self.state.put(COMPARE_PROMPT, prompt)
        self.state.put(COMPARE_MAX_TOKENS, self.max_tokens.value())
        self.left.text.setPlainText("Loading…")
        self.right.text.setPlainText("Waiting for the original…")
        self.run_btn.setEnabled(False)
        for panel in (self.left, self.right):
            panel.stats.setText("—")
        self.left.heat.clear()
        self.result = None
        run = self._run

        def current(fn):
            return lambda *a: fn(*a) if run == self._run else None

        self._streamed = {"original": "", "quantized": ""}
        self.job = run_in_thread(
            services.compare, paths[0], paths[1], prompt, max_tokens=self.max_tokens.value(),
            temperature=0.0 if self.greedy.isChecked() else 0.7, pass_reporter=True,
            on_result=current(self.show_result), on_error=current(self._error), on_end=self._ended,
            on_progress=current(lambda d, t, m: self.summary.setText(m)), on_item=current(self._stream_piece),
        )

    def _stream_piece(self, item) -> None:
        side, text = item
        self._streamed[side] += text
        (self.left if side == "original" else self.right).text.setPlainText(self._streamed[side])

    def _ended(self) -> None:
        self.job = None
        self.run_btn.setEnabled(True)

    def _error(self, message: str) -> None:
        self.banner.show_message(message)
        self.result = None
        for panel in (self.left, self.right):
            panel.text.clear()
            panel.stats.setText("—")
        self.summary.clear()

    def show_result(self, result: CompareOutcome) -> None:
        self.result = result
        colour = plot_colors()["highlight"].name()
        div = self.divergence = result.first_divergence
        for panel, side in ((self.left, result.original), (self.right, result.quantized)):
            panel.text.setHtml(highlight_pieces(side.pieces, div, colour))
            tps = side.tokens_per_second
            speed = f"{tps:.1f} tokens/s" if tps else "— tokens/s"
            panel.stats.setText(f"{len(side.token_ids)} tokens · {speed} · weights {human_bytes(side.weights_bytes)}"
                                f" + KV cache {human_bytes(side.kv_cache_bytes)} ({side.kv_cache_tokens:,} tokens)")
            panel.stats.setToolTip("What the loaded model holds: its weights, and the keys and values it caches "
                                   "(llama.cpp sets aside the whole context; torch holds the answer's sequence)")
        self.left.heat.set_values(result.original.pieces, list(result.kld_per_token))
        self.summary.setText(
            ("Identical answers." if div is None else f"First divergence at token {div + 1} (highlighted).")
            + " KL divergence of the quantized model along the original's answer: mean "
            f"{format_kld(result.kld_mean)}, max {format_kld(result.kld_max)}; same top token "
            f"{100 * result.top1_agreement:.1f} %")
        self.compared.emit(result)

    def show_answer(self, answer) -> None:
        """One question of the task set side by side: both answers, the divergence marked on the original's
        and the heat strip along it."""
        colour = plot_colors()["highlight"].name()
        self.prompt.setPlainText(answer.prompt)
        self.left.text.setHtml(highlight_pieces(answer.pieces_a, answer.first_divergence, colour))
        self.right.text.setPlainText(answer.reply_b)
        self.left.heat.set_values(answer.pieces_a, answer.kld_per_token)
        for panel, ok in ((self.left, answer.correct_a), (self.right, answer.correct_b)):
            panel.stats.setText(f"{'right' if ok else 'wrong'} (expected {answer.answer!r})")
        where = "" if answer.first_divergence is None else f"First divergence at token {answer.first_divergence + 1}. "
        self.summary.setText(f"{where}KL divergence along the original's answer: mean {format_kld(answer.kld_mean)}; "
                             f"same top token {100 * answer.top1_agreement:.1f} %")

    # -- full eval ---------------------------------------------------------------------------------

    def run_eval(self) -> None:
        if self.eval_job is not None and self.eval_job.is_running():
            self.eval_job.cancel()
            return
        paths = self._paths()
        if paths is None:
            return
        self.banner.clear()
        extra = ["--chunks", str(self.eval_chunks.value())] if self.eval_chunks.value() else []
        run = self._run
        self.eval_job = ProcessJob(engine_argv("eval", paths[0], paths[1], *extra, output="--json"), self)
        self.eval_job.progress.connect(lambda *a: self._eval_progress(*a) if run == self._run else None)
        self.eval_job.succeeded.connect(lambda r: self._eval_done(r) if run == self._run else None)
        self.eval_job.failed.connect(lambda m: self._eval_failed(m) if run == self._run else None)
        self.eval_job.ended.connect(lambda: self.eval_btn.setText("Run eval"))
        self.eval_btn.setText("Cancel eval")
        self.eval_result = None
        for label in self.eval_labels.values():
            label.setText("—")
        self.eval_progress.setRange(0, 0)
        self.eval_job.start()

    def _eval_progress(self, done: int, total: int, message: str, eta: float) -> None:
        if total:
            self.eval_progress.setRange(0, total)
            self.eval_progress.setValue(done)

    def _eval_failed(self, message: str) -> None:
        self.banner.show_message(f"Evaluation failed: {message}")
        self.eval_progress.setRange(0, 1)
        self.eval_progress.setValue(0)

    def _eval_done(self, result: dict) -> None:
        self.eval_result = e = EvalFigures.from_json(result)
        self.eval_progress.setRange(0, 1)
        self.eval_progress.setValue(1)
        self.eval_labels["ppl"].setText(f"{e.ppl_original:.3f} → {e.ppl_quantized:.3f}")
        self.eval_labels["kld"].setText(f"{format_kld(e.kld_mean)}, {format_kld(e.kld_p99)}")
        self.eval_labels["agree"].setText(f"{100 * e.top1_agreement:.2f} %")
        self.evaluated.emit(e)

    # -- window hooks ------------------------------------------------------------------------------

    def is_busy(self) -> bool:
        return (self.job is not None or (self.eval_job is not None and self.eval_job.is_running())
                or any(p.is_busy() for p in (self.context, self.tasks, self.speed)))

    def shutdown(self) -> None:
        for panel in (self.context, self.tasks, self.speed):
            panel._gen += 1  # a result already on its way lands in a closed view: drop it
            if panel.job is not None:
                panel.job.cancel()
        if self.context.plan_job is not None:
            self.context.plan_job.cancel()
        if self.eval_job is not None and self.eval_job.is_running():
            self.eval_job.cancel()
            self.eval_job.proc.waitForFinished(5000)
