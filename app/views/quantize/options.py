"""The options beside the type table: how the result will run (context, KV cache, device), calibration
(importance matrix or AWQ's samples) and where the output goes. The format page owns the table and the
estimate; this panel owns these fields, the output name and the calibration text's figures."""

from __future__ import annotations

import os
import pathlib

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.children import run_module_in_child
from app.jobs import format_seconds
from app.settings import (
    QUANTIZE_AWQ_GROUP,
    QUANTIZE_AWQ_SAMPLES,
    QUANTIZE_AWQ_SEQLEN,
    QUANTIZE_IMATRIX_RATE,
    QUANTIZE_IMATRIX_WINDOWS,
    QUANTIZE_OUTPUT_DIR,
)
from app.state import AppState

CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)  # before the model's own are known
KV_TYPES = ("f16", "q8_0", "q4_0")
AWQ_TYPE = "AWQ"  # the type name the quantize command takes for AWQ 4-bit
GROUP_SIZES = (32, 64, 128)

# The settings an engine message can name (engine.core.errors.SETTINGS), as this wizard labels their fields.
FIELD_LABELS = {
    "quant type": "Type", "output path": "Save to", "calibration text": "Calibration text",
    "importance matrix": "Importance matrix", "saved importance matrix": "Importance matrix",
    "importance matrix windows": "Windows", "context length": "Context", "KV cache type": "KV cache type",
    "GPU layers": "GPU layers", "device": "Device", "bits": "Bits", "group size": "Group size",
    "calibration samples": "Samples", "sample length": "Sample length", "threads": "Threads",
}


def _path_row(edit: QLineEdit, button: QPushButton) -> QHBoxLayout:
    button.setFixedWidth(32)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class OptionsPanel(QWidget):
    """Context, KV cache, device; importance matrix or AWQ calibration; output. ``changed`` on any edit."""

    changed = Signal()

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.model_path = ""
        self.types: list[str] = []  # the types the output is for (one, several, or ["AWQ"])
        self.n_params = 0
        self.flops: float | None = None
        self.text: services.CalibrationText | None = None  # the calibration text as the model's tokenizer sees it
        self.text_error = ""
        self._counting: tuple | None = None
        self.custom_name = False  # the user typed or picked a name: it no longer follows model and type
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)

        run_box = QGroupBox("Running it")
        rf = QFormLayout(run_box)
        self.ctx = QComboBox()
        self.set_contexts([(c, False) for c in CONTEXTS], 4096)
        self.kv = QComboBox()
        self.kv.addItems(KV_TYPES)
        self.device = QComboBox()
        self.gpu_layers = QSpinBox()
        self.gpu_layers.setRange(0, 999)
        self.gpu_layers.setSpecialValueText("0 (CPU only)")
        self.gpu_layers.setEnabled(False)
        rf.addRow(FIELD_LABELS["context length"] + ":", self.ctx)
        rf.addRow(FIELD_LABELS["KV cache type"] + ":", self.kv)
        rf.addRow(FIELD_LABELS["device"] + ":", self.device)
        rf.addRow(FIELD_LABELS["GPU layers"] + ":", self.gpu_layers)
        self.device_note = QLabel()
        self.device_note.setWordWrap(True)
        rf.addRow(self.device_note)
        lay.addWidget(run_box)

        self.cal_box = QGroupBox("Calibration")
        self.cal_form = cf = QFormLayout(self.cal_box)
        self.imatrix_mode = QComboBox()
        self.imatrix_mode.addItem("None", "none")
        self.imatrix_mode.addItem("Compute from calibration text", "calibration")
        self.imatrix_mode.addItem("Use an imatrix file", "imatrix")
        self.imatrix_path = QLineEdit(placeholderText="imatrix.gguf from llama-imatrix")
        self.cal_path = QLineEdit(placeholderText="built-in calibration text")
        self.windows = QSpinBox()
        self.windows.setRange(0, 100000)
        self.windows.setSpecialValueText("the whole text")
        self.windows.setValue(int(state.get(QUANTIZE_IMATRIX_WINDOWS)))
        self.windows.setToolTip(f"Windows of {services.WINDOW_TOKENS} tokens run through the model, as "
                                "llama-imatrix's --chunks; more take longer and change the result less and less")
        self.samples = QSpinBox()
        self.samples.setRange(1, 100000)
        self.samples.setValue(int(state.get(QUANTIZE_AWQ_SAMPLES)))
        self.seqlen = QSpinBox()
        self.seqlen.setRange(16, 131072)
        self.seqlen.setValue(int(state.get(QUANTIZE_AWQ_SEQLEN)))
        self.seqlen.setSuffix(" tokens")
        self.group_size = QComboBox()
        for g in GROUP_SIZES:
            self.group_size.addItem(str(g), g)
        gi = self.group_size.findData(int(state.get(QUANTIZE_AWQ_GROUP)))
        self.group_size.setCurrentIndex(gi if gi >= 0 else len(GROUP_SIZES) - 1)
        self.bits = QLabel("4 (AWQ's GEMM layout stores 4-bit weights)")
        self.bits.setWordWrap(True)
        self.cal_note = QLabel()
        self.cal_note.setWordWrap(True)
        im_pick, cal_pick = QPushButton("…"), QPushButton("…")
        cf.addRow(FIELD_LABELS["importance matrix"] + ":", self.imatrix_mode)
        cf.addRow("Imatrix file:", _path_row(self.imatrix_path, im_pick))
        cf.addRow(FIELD_LABELS["calibration text"] + ":", _path_row(self.cal_path, cal_pick))
        cf.addRow(FIELD_LABELS["importance matrix windows"] + ":", self.windows)
        cf.addRow(FIELD_LABELS["calibration samples"] + ":", self.samples)
        cf.addRow(FIELD_LABELS["sample length"] + ":", self.seqlen)
        cf.addRow(FIELD_LABELS["group size"] + ":", self.group_size)
        cf.addRow(FIELD_LABELS["bits"] + ":", self.bits)
        cf.addRow(self.cal_note)
        lay.addWidget(self.cal_box)

        for combo in (self.ctx, self.kv, self.device, self.imatrix_mode, self.group_size):
            # long entries ("CPU — 2 threads, 20.8 GiB RAM free") are elided, so the panel fits a narrow window
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)

        out_box = QGroupBox("Output")
        of = QFormLayout(out_box)
        self.output = QLineEdit()
        out_pick = QPushButton("…")
        self.threads = QSpinBox()
        self.threads.setRange(1, max(1, os.cpu_count() or 1))
        self.threads.setValue(max(1, os.cpu_count() or 1))
        self.out_note = QLabel()
        self.out_note.setWordWrap(True)
        of.addRow(FIELD_LABELS["output path"] + ":", _path_row(self.output, out_pick))
        of.addRow(FIELD_LABELS["threads"] + ":", self.threads)
        of.addRow(self.out_note)
        lay.addWidget(out_box)
        lay.addStretch(1)

        self.imatrix_mode.currentIndexChanged.connect(self._layout_rows)
        for w in (self.imatrix_mode, self.group_size):
            w.currentIndexChanged.connect(lambda _i: self.changed.emit())
        for w in (self.windows, self.samples, self.seqlen, self.threads):
            w.valueChanged.connect(lambda _v: (self.update_notes(), self.changed.emit()))
        im_pick.clicked.connect(self._pick_imatrix)
        cal_pick.clicked.connect(self._pick_text)
        self.cal_path.editingFinished.connect(self.count_text)
        self.imatrix_path.editingFinished.connect(self.changed.emit)
        out_pick.clicked.connect(self.pick_output)
        self.output.textEdited.connect(self._name_typed)
        self.output.editingFinished.connect(self.changed.emit)
        self._layout_rows()

    # -- what the page tells the panel -------------------------------------------------------------

    def set_contexts(self, choices: list[tuple[int, bool]], current: int) -> None:
        """Offer ``choices`` (tokens, beyond training); select ``current`` or the largest one below it."""
        self.ctx.blockSignals(True)
        self.ctx.clear()
        trained = max((c for c, beyond in choices if not beyond), default=0)
        for c, beyond in choices:
            label = f"{c:,} tokens" + (" (trained)" if c == trained else "") + (" — beyond training" if beyond else "")
            self.ctx.addItem(label, c)
        fitting = [i for i, (c, _b) in enumerate(choices) if c <= current]
        self.ctx.setCurrentIndex(fitting[-1] if fitting else 0)
        self.ctx.blockSignals(False)

    def context(self) -> int:
        return int(self.ctx.currentData())

    def is_awq(self) -> bool:
        return self.types == [AWQ_TYPE]

    def set_target(self, model_path: str, types: list[str], n_params: int = 0) -> None:
        """The model and the types the output is for; the output name follows them unless the user chose one."""
        new_model = model_path != self.model_path
        if new_model:
            self.custom_name = False  # a name chosen for another model would replace that model's output
        self.model_path, self.types, self.n_params = model_path, list(types), n_params or self.n_params
        self._layout_rows()
        self.follow_output()
        if new_model or self.text is None:
            self.count_text()
        self.update_notes()

    # -- rows --------------------------------------------------------------------------------------

    def imatrix_source(self) -> str:
        return "awq" if self.is_awq() else self.imatrix_mode.currentData()

    def _layout_rows(self) -> None:
        mode = self.imatrix_source()
        f = self.cal_form
        rows = {self.imatrix_mode: mode != "awq", self.imatrix_path: mode == "imatrix",
                self.cal_path: mode in ("calibration", "awq"), self.windows: mode == "calibration",
                self.samples: mode == "awq", self.seqlen: mode == "awq", self.group_size: mode == "awq",
                self.bits: mode == "awq"}
        for r in range(f.rowCount()):
            field = f.itemAt(r, QFormLayout.ItemRole.FieldRole)
            w = field.widget() if field else None
            if w is None and field is not None and field.layout() is not None:
                w = field.layout().itemAt(0).widget()
            if w in rows:
                f.setRowVisible(r, rows[w])
        self.cal_box.setTitle("AWQ calibration" if mode == "awq" else "Importance matrix")
        self.update_notes()

    def _pick_imatrix(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose an importance matrix", self.imatrix_path.text(),
                                              "Importance matrix (*.gguf *.dat);;All files (*)")
        if path:
            self.imatrix_path.setText(path)
            self.changed.emit()

    def _pick_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a calibration text", self.cal_path.text(),
                                              "Text (*.txt);;All files (*)")
        if path:
            self.cal_path.setText(path)
            self.count_text()

    # -- the calibration text ----------------------------------------------------------------------

    def count_text(self) -> None:
        """Count the calibration text's tokens with the model's tokenizer (a child process)."""
        if not self.model_path:
            return
        key = (self.model_path, self.cal_path.text().strip())
        if self._counting == key:
            return
        self._counting, self.text, self.text_error = key, None, ""
        self.update_notes()
        run_module_in_child(*services.calibration_count_command(*key),
                            on_result=lambda r: self._counted(key, services.calibration_text(r), ""),
                            on_error=lambda msg: self._counted(key, None, msg))

    def _counted(self, key, text, error: str) -> None:
        if key == self._counting:
            self.text, self.text_error = text, error
            self.update_notes()
            self.changed.emit()

    def fitted_samples(self) -> int | None:
        """AWQ's samples, fitted to the text (None while it is being counted)."""
        if self.text is None:
            return None
        return services.fit_samples(self.text.tokens, self.samples.value(), self.seqlen.value())

    def imatrix_windows(self) -> int | None:
        return self.windows.value() or None

    def update_notes(self) -> None:
        mode = self.imatrix_source()
        if mode in ("none", "imatrix"):
            self.cal_note.setText("")
            return
        if self.text_error:
            self.cal_note.setText(self.text_error)
            return
        if self.text is None:
            self.cal_note.setText("Counting the calibration text's tokens…")
            return
        tokens = self.text.tokens
        if mode == "awq":
            n, want = self.fitted_samples(), self.samples.value()
            if n == 0:
                self.cal_note.setText(f"The text has {tokens:,} tokens: not one sample of {self.seqlen.value():,}; "
                                      "shorten the sample length or choose a longer text.")
            elif n < want:
                self.cal_note.setText(f"Fitted to {n:,} samples: the text has {tokens:,} tokens "
                                      f"({n:,} × {self.seqlen.value():,}).")
            else:
                self.cal_note.setText(f"{n:,} samples of {self.seqlen.value():,} tokens from a text of {tokens:,}.")
            return
        available = tokens // services.WINDOW_TOKENS
        windows = min(self.windows.value() or available, available)
        text = f"The text has {available:,} windows of {services.WINDOW_TOKENS} tokens; {windows:,} will run."
        measured = float(self.state.get(QUANTIZE_IMATRIX_RATE) or 0)
        if (measured or self.flops) and self.n_params:
            if measured:
                t = services.imatrix_time(self.n_params, windows, measured,
                                          source="the rate of the last importance matrix run here")
            else:
                t = services.imatrix_time(self.n_params, windows, self.flops,
                                          source="a first guess from a matrix-multiply probe (a run measures it)")
            text += f" Expected time: about {format_seconds(t.seconds)} ({t.explain()})."
        else:
            text += " Measuring this machine's speed…"
        self.cal_note.setText(text)

    def set_flops(self, flops: float) -> None:
        self.flops = flops
        self.update_notes()

    def remember_rate(self, windows: int, seconds: float) -> None:
        """An importance matrix ran ``windows`` windows in ``seconds``: expect that rate next time."""
        if windows > 0 and seconds > 0 and self.n_params:
            self.state.put(QUANTIZE_IMATRIX_RATE, services.measured_flops(self.n_params, windows, seconds))
            self.update_notes()

    # -- output ------------------------------------------------------------------------------------

    def default_folder(self) -> pathlib.Path:
        """The remembered output folder, or Nibble's outputs folder; never inside the installation."""
        saved = self.state.get(QUANTIZE_OUTPUT_DIR)
        if saved and not services.inside_install(saved):
            return pathlib.Path(saved)
        return services.outputs_dir()

    def output_kind(self) -> str:
        """"file" (one GGUF type), "folder" (AWQ) or "queue" (several types: the folder they go in)."""
        return "folder" if self.is_awq() else ("queue" if len(self.types) > 1 else "file")

    def folder(self) -> pathlib.Path:
        """The folder the output text points into (or is, for a queue)."""
        text = self.output.text().strip()
        if not text:
            return self.default_folder()
        p = pathlib.Path(text).expanduser()
        if p.suffix.lower() == ".gguf" or not self._shows_folder:
            return p.parent
        return p

    _shows_folder = False  # the text is a queue's folder

    def follow_output(self) -> None:
        """Name the output after model and type (unless the user chose a name); its kind follows the format."""
        if not self.model_path or not self.types:
            return
        folder = self.folder()
        if services.inside_install(folder):
            folder = self.default_folder()
        kind = self.output_kind()
        if kind == "queue":
            text = str(folder)
        elif self.custom_name:
            name = pathlib.Path(self.output.text().strip()).name
            stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
            text = str(folder / (stem if kind == "folder" else stem + ".gguf"))
        else:
            text = str(folder / services.output_name(self.model_path, self.types[0]))
        self._shows_folder = kind == "queue"
        if text != self.output.text():
            self.output.setText(text)
        self.out_note.setText("Each type is saved as NAME-TYPE.gguf in this folder." if kind == "queue" else "")

    def _name_typed(self, _text: str) -> None:
        self.custom_name = self.output_kind() != "queue"

    def pick_output(self) -> None:
        start = str(self.folder() if self.output_kind() == "queue" else pathlib.Path(self.output.text() or "."))
        kind = self.output_kind()
        if kind == "queue":
            path = QFileDialog.getExistingDirectory(self, "Save the files in", start)
        elif kind == "folder":  # a name for a new folder: it need not exist yet
            path, _ = QFileDialog.getSaveFileName(self, "Save the AWQ model as a folder named", start, "Folder (*)",
                                                  options=QFileDialog.Option.DontConfirmOverwrite)
        else:  # replacing is asked before the run, once, with the rest of the checks
            path, _ = QFileDialog.getSaveFileName(self, "Save the GGUF file as", start, "GGUF (*.gguf)",
                                                  options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return
        p = pathlib.Path(path)
        if kind == "queue":
            self._shows_folder = True
            self.output.setText(str(p))
        else:
            if kind == "file" and p.suffix.lower() != ".gguf":
                p = p.with_name(p.name + ".gguf")
            self.custom_name = p.name != services.output_name(self.model_path, self.types[0]) if self.types else True
            self.output.setText(str(p))
        self.changed.emit()

    def remember_folder(self) -> None:
        folder = self.folder()
        if not services.inside_install(folder):
            self.state.put(QUANTIZE_OUTPUT_DIR, str(folder))

    def save_choices(self) -> None:
        self.remember_folder()
        self.state.put(QUANTIZE_IMATRIX_WINDOWS, self.windows.value())
        self.state.put(QUANTIZE_AWQ_SAMPLES, self.samples.value())
        self.state.put(QUANTIZE_AWQ_SEQLEN, self.seqlen.value())
        self.state.put(QUANTIZE_AWQ_GROUP, int(self.group_size.currentData()))

