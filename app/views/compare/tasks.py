"""Compare's task set: both models answer every question (the demo's, or a JSONL file of prompt/answer
pairs) in a background job; accuracy side by side, overall and per category, and the questions whose answers
differ, each opening in the side-by-side view."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread, while_current


def accuracy_text(correct: int, total: int) -> str:
    return f"{100 * correct / total:.1f} % ({correct}/{total})" if total else "—"


class TaskSetPanel(QWidget):
    finished = Signal(object)  # the engine's TaskCompareResult
    open_answer = Signal(object)  # a TaskAnswer to show side by side

    def __init__(self, paths, banner, parent=None):
        """``paths()`` gives (original, quantized) or None (and says why in ``banner``)."""
        super().__init__(parent)
        self.paths, self.banner = paths, banner
        self.job = None
        self._gen = 0  # bumped by reset()
        self.result = None
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.use_demo = QRadioButton("The demo's questions")
        self.use_demo.setChecked(True)
        self.questions = QSpinBox(minimum=1, maximum=1000)
        self.questions.setValue(100)
        self.questions.setSuffix(" questions")
        self.use_file = QRadioButton("My JSONL file:")
        self.file = QLineEdit()
        self.file.setPlaceholderText('one {"prompt": ..., "answer": ..., "category": ...} a line')
        self.browse = QPushButton("Browse…")
        self.run_btn = QPushButton("Run task set")
        for w in (self.use_demo, self.questions, self.use_file):
            row.addWidget(w)
        row.addWidget(self.file, 1)
        row.addWidget(self.browse)
        row.addWidget(self.run_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("%v/%m questions")
        self.status = QLabel()
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.status, 1)
        lay.addLayout(prow)
        body = QHBoxLayout()
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Original", "Quantized"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        body.addWidget(self.table, 1)
        col = QVBoxLayout()
        self.diff_label = QLabel("Answers that differ (click to see both):")
        col.addWidget(self.diff_label)
        self.differing = QListWidget()
        col.addWidget(self.differing, 1)
        body.addLayout(col, 2)
        lay.addLayout(body, 1)

        self.browse.clicked.connect(self._browse)
        self.file.textEdited.connect(lambda _t: self.use_file.setChecked(True))
        self.run_btn.clicked.connect(self.run)
        self.differing.itemActivated.connect(self._open)
        self.differing.itemClicked.connect(self._open)

    def _browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Task set", "", "JSON lines (*.jsonl *.json);;All files (*)")
        if name:
            self.file.setText(name)
            self.use_file.setChecked(True)

    def reset(self) -> None:
        self._gen += 1  # results of a job for an earlier pair are dropped
        if self.job is not None:
            self.job.cancel()
        self.result = None
        self.table.setRowCount(0)
        self.differing.clear()
        self.status.clear()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def run(self) -> None:
        if self.job is not None:
            self.job.cancel()  # the button reads Cancel while the job runs
            return
        paths = self.paths()
        if paths is None:
            return
        tasks_file = self.file.text().strip() if self.use_file.isChecked() else None
        if self.use_file.isChecked() and not tasks_file:
            self.banner.show_message("Choose a task file (JSONL of prompt/answer pairs), or the demo's questions.")
            return
        self.banner.clear()
        self.reset()
        self.progress.setRange(0, 0)
        self.status.setText("Loading both models…")
        self.run_btn.setText("Cancel")
        self.job = run_in_thread(
            services.run_task_set, paths[0], paths[1], tasks_file=tasks_file, questions=self.questions.value(),
            pass_reporter=True, on_result=while_current(self, self.show_result),
            on_error=while_current(self, self._error), on_end=self._ended,
            on_progress=while_current(self, self._progress), on_cancelled=lambda: self.status.setText("Cancelled."),
        )

    def _progress(self, done: int, total: int, message: str) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.status.setText(f"right: {message}" if done else message)

    def _ended(self) -> None:
        self.job = None
        self.run_btn.setText("Run task set")

    def _error(self, message: str) -> None:
        self.banner.show_message(message)
        self.status.clear()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def show_result(self, r) -> None:
        self.result = r
        rows = [("Overall", None)] + [(c, c) for c in r.categories]
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels([name for name, _ in rows])
        for n, (_name, cat) in enumerate(rows):
            for col, side in enumerate("ab"):
                s = r.score(side, cat)
                item = QTableWidgetItem(accuracy_text(s.correct, s.total))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(n, col, item)
        self.table.resizeColumnsToContents()
        self.differing.clear()
        for a in r.differing:
            mark = lambda ok: "✓" if ok else "✗"
            it = QListWidgetItem(f"{mark(a.correct_a)}{mark(a.correct_b)}  {a.prompt}  →  "
                                 f"{a.reply_a[:40]!r} vs {a.reply_b[:40]!r}")
            it.setToolTip(f"Expected: {a.answer}\nOriginal: {a.reply_a}\nQuantized: {a.reply_b}\n"
                          f"Mean KLD along the original's answer: {services.format_kld(a.kld_mean)}")
            it.setData(Qt.ItemDataRole.UserRole, a)
            self.differing.addItem(it)
        self.diff_label.setText(f"{len(r.differing)} of {len(r.items)} answers differ (click one to see both; "
                                "✓/✗: original, quantized right):")
        self.status.setText(f"{r.task_name}: {len(r.items)} questions in {r.seconds:.1f} s")
        self.progress.setRange(0, max(1, len(r.items)))
        self.progress.setValue(len(r.items))
        self.finished.emit(r)

    def _open(self, item: QListWidgetItem) -> None:
        self.open_answer.emit(item.data(Qt.ItemDataRole.UserRole))

    def is_busy(self) -> bool:
        return self.job is not None
