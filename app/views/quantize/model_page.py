"""Step 1 of the Quantize wizard: where the model comes from (the Hub, the local cache, a folder, the demo)."""

from __future__ import annotations

import pathlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import services
from app.jobs import run_in_thread
from app.services import ORIGINAL, CachedModel, HubModel, human_bytes
from app.state import DEMO_NAME, AppState, ModelEntry, demo_dir, kind_of
from app.widgets import Banner


def setup_table(t: QTableWidget) -> None:
    """A read-only table of rows picked one at a time."""
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().hide()
    t.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)


class ModelPage(QWidget):
    """Where the model comes from: the Hub, the local cache, a folder, or the demo model."""

    model_chosen = Signal(object)  # ModelEntry

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.entry: ModelEntry | None = None
        self._jobs: list = []
        lay = QVBoxLayout(self)
        self.tabs = QTabWidget()
        lay.addWidget(self.tabs, 1)

        # Hub search
        hub = QWidget()
        hl = QVBoxLayout(hub)
        row = QHBoxLayout()
        self.query = QLineEdit(placeholderText="Search the Hugging Face Hub, e.g. SmolLM2 or Qwen2.5 0.5B")
        self.search_btn = QPushButton("Search")
        row.addWidget(self.query, 1)
        row.addWidget(self.search_btn)
        hl.addLayout(row)
        self.results = QTableWidget(0, 5)
        self.results.setHorizontalHeaderLabels(["Model", "Size", "Downloads", "Access", "Nibble converts"])
        self._found: dict[str, HubModel] = {}  # search results by id
        self._gguf_for: dict[str, str] = {}  # a GGUF to requantize, for models Nibble cannot convert
        setup_table(self.results)
        hl.addWidget(self.results, 1)
        hrow = QHBoxLayout()
        self.hub_status = QLabel()
        self.download_btn = QPushButton("Download and use")
        self.download_btn.setEnabled(False)
        hrow.addWidget(self.hub_status, 1)
        hrow.addWidget(self.download_btn)
        hl.addLayout(hrow)
        self.tabs.addTab(hub, "Hugging Face Hub")
        self.search_btn.clicked.connect(self.search)
        self.query.returnPressed.connect(self.search)
        self.results.itemSelectionChanged.connect(self._result_selected)
        self.download_btn.clicked.connect(self.download_selected)

        # Local cache
        cache = QWidget()
        cl = QVBoxLayout(cache)
        self.cache_table = QTableWidget(0, 3)
        self.cache_table.setHorizontalHeaderLabels(["Model", "Size", "Folder"])
        setup_table(self.cache_table)
        cl.addWidget(self.cache_table, 1)
        crow = QHBoxLayout()
        self.cache_status = QLabel()
        self.cache_refresh = QPushButton("Refresh")
        self.cache_use = QPushButton("Use this model")
        crow.addWidget(self.cache_status, 1)
        crow.addWidget(self.cache_refresh)
        crow.addWidget(self.cache_use)
        cl.addLayout(crow)
        self.tabs.addTab(cache, "Local cache")
        self.cache_refresh.clicked.connect(self.refresh_cache)
        self.cache_use.clicked.connect(self._use_cached)
        self.cache_table.doubleClicked.connect(lambda _i: self._use_cached())

        # Folder
        folder = QWidget()
        fl = QVBoxLayout(folder)
        frow = QHBoxLayout()
        self.folder_edit = QLineEdit(placeholderText="A folder with config.json and *.safetensors")
        browse = QPushButton("Browse…")
        use_folder = QPushButton("Use this folder")
        frow.addWidget(self.folder_edit, 1)
        frow.addWidget(browse)
        frow.addWidget(use_folder)
        fl.addLayout(frow)
        recent_box = QGroupBox("Recent models")
        rl = QVBoxLayout(recent_box)
        self.recent = QTableWidget(0, 2)
        self.recent.setHorizontalHeaderLabels(["Model", "Folder"])
        setup_table(self.recent)
        rl.addWidget(self.recent)
        fl.addWidget(recent_box, 1)
        self.tabs.addTab(folder, "Local folder")
        browse.clicked.connect(self._browse)
        use_folder.clicked.connect(lambda: self.use_path(self.folder_edit.text().strip()))
        self.folder_edit.returnPressed.connect(lambda: self.use_path(self.folder_edit.text().strip()))
        self.recent.doubleClicked.connect(self._use_recent)

        # Demo
        demo = QWidget()
        dl = QVBoxLayout(demo)
        self.demo_label = QLabel()
        self.demo_label.setWordWrap(True)
        self.demo_btn = QPushButton("Try with the demo model")
        dl.addWidget(self.demo_label)
        dl.addWidget(self.demo_btn, 0, Qt.AlignmentFlag.AlignLeft)
        dl.addStretch(1)
        self.tabs.addTab(demo, "Demo model")
        self.demo_btn.clicked.connect(self.use_demo)

        self.chosen = QLabel("No model chosen yet.")
        self.chosen.setWordWrap(True)
        lay.addWidget(self.chosen)
        self.banner = Banner()
        lay.addWidget(self.banner)

        self.refresh_demo()
        self.refresh_recent()
        state.models_changed.connect(self.refresh_recent)
        self.demo_tab = demo
        if not self.state.recent_models() and demo_dir() is not None:
            # First run: nothing to pick yet, so lead with the model that ships with Nibble.
            self.tabs.setCurrentWidget(demo)
            self.chosen.setText("New here? Try Nibble with the demo model: it quantizes in seconds.")

    # -- sources -----------------------------------------------------------------------------------

    def refresh_demo(self) -> None:
        d = demo_dir()
        if d is None:
            self.demo_label.setText("The demo model is not part of this installation of Nibble.")
            self.demo_btn.setEnabled(False)
        else:
            self.demo_label.setText(
                "A small Llama-architecture chat model that ships with Nibble, so you can try every step "
                f"in a minute.\n\n{d}"
            )
            self.demo_btn.setEnabled(True)

    def refresh_recent(self) -> None:
        items = [e for e in self.state.recent_models() if e.kind == ORIGINAL]
        self.recent.setRowCount(len(items))
        for r, e in enumerate(items):
            self.recent.setItem(r, 0, QTableWidgetItem(e.name or pathlib.Path(e.path).name))
            it = QTableWidgetItem(e.path)
            it.setData(Qt.ItemDataRole.UserRole, e.path)
            self.recent.setItem(r, 1, it)

    def _use_recent(self, index) -> None:
        it = self.recent.item(index.row(), 1)
        if it:
            self.use_path(it.text())

    def use_demo(self) -> None:
        d = demo_dir()
        if d is not None:
            self.choose(ModelEntry(str(d), ORIGINAL, name=DEMO_NAME))

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder", self.folder_edit.text())
        if path:
            self.folder_edit.setText(path)
            self.use_path(path)

    def use_path(self, path: str) -> None:
        if not path:
            return
        p = pathlib.Path(path).expanduser()
        if not (p / "config.json").is_file():
            self.banner.show_message(f"{p} has no config.json: choose the folder of a Hugging Face model.")
            return
        self.choose(ModelEntry(str(p), kind_of(p)))

    def choose(self, entry: ModelEntry) -> None:
        self.banner.clear()
        self.entry = entry
        self.chosen.setText(f"<b>Model:</b> {entry.name or pathlib.Path(entry.path).name} — {entry.path}")
        self.state.add_model(entry)
        self.model_chosen.emit(entry)

    # -- hub ---------------------------------------------------------------------------------------

    def search(self) -> None:
        if not self.query.text().strip():
            return
        self.hub_status.setText("Searching…")
        self.search_btn.setEnabled(False)
        self._jobs.append(run_in_thread(
            services.search_models, self.query.text().strip(), on_result=self._show_results, on_error=self._hub_error,
            on_end=lambda: self.search_btn.setEnabled(True),
        ))

    def _show_results(self, results: list[HubModel]) -> None:
        self._found = {m.id: m for m in results}
        self.results.setRowCount(len(results))
        for r, m in enumerate(results):
            size = m.safetensors_bytes
            converts = {True: f"yes ({m.family})", False: f"no ({m.architecture})", None: "?"}[m.convertible]
            cells = [m.id, human_bytes(size) if size else "—", f"{m.downloads:,}",
                     "gated — needs access" if m.gated else "open", converts]
            for c, text in enumerate(cells):
                it = QTableWidgetItem(text)
                if c == 0:
                    it.setData(Qt.ItemDataRole.UserRole, m.id)
                self.results.setItem(r, c, it)
        self.hub_status.setText(f"{len(results)} models" if results else "Nothing found.")

    def _hub_error(self, message: str) -> None:
        self.hub_status.setText("")
        self.banner.show_message(message)

    def _selected_repo(self) -> str | None:
        rows = self.results.selectionModel().selectedRows()
        return self.results.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else None

    def _result_selected(self) -> None:
        """Say before downloading whether Nibble can convert the model; if not, look for a GGUF of it to
        requantize in the same repository."""
        repo = self._selected_repo()
        m = self._found.get(repo) if repo else None
        self.banner.clear()
        self.download_btn.setText("Download and use")
        self.download_btn.setEnabled(m is not None and m.convertible is not False)
        if m is None or m.convertible is not False:
            return
        if repo in self._gguf_for:
            self._explain(m, self._gguf_for[repo])
            return
        self.banner.show_message(f"{repo} is a {m.architecture} model, which Nibble cannot convert; looking for a "
                                 "GGUF of it to requantize…", "info")
        self._jobs.append(run_in_thread(services.model_details, repo, with_tensors=False,
                                        on_result=lambda d: self._details(repo, d), on_error=self._hub_error))

    def _details(self, repo: str, details: HubModel) -> None:
        gguf = services.requantizable_gguf(details)
        if gguf:
            self._gguf_for[repo] = gguf
        if self._selected_repo() == repo:
            self._explain(self._found[repo], gguf)

    def _explain(self, m: HubModel, gguf: str | None) -> None:
        text = (f"{m.id} is a {m.architecture} model, which Nibble cannot convert (it converts "
                f"{', '.join(services.converted_families())}). ")
        if gguf:
            self.banner.show_message(text + f"The repository has {gguf}, which Nibble can requantize: "
                                     "download that file and quantize it.", "info")
            self.download_btn.setText("Download its GGUF and use")
            self.download_btn.setEnabled(True)
        else:
            self.banner.show_message(text + "Look on the Hub for a GGUF of it (F16, BF16 or Q8_0) to requantize.",
                                     "warn")
            self.download_btn.setEnabled(False)

    def download_selected(self) -> None:
        repo = self._selected_repo()
        if not repo:
            return
        gguf = self._gguf_for.get(repo)
        self.hub_status.setText(f"Downloading {repo}…")
        self.download_btn.setEnabled(False)

        def progress(done, total, msg):
            self.hub_status.setText(f"Downloading {repo}: {human_bytes(done)} of {human_bytes(total)}")

        self._jobs.append(run_in_thread(
            services.download_model, repo, pass_reporter=True, on_progress=progress, gguf=gguf,
            on_result=lambda path: (self.hub_status.setText(f"Downloaded {repo}."),
                                    self.choose(ModelEntry(str(path), kind_of(path) if gguf else ORIGINAL, name=repo))),
            on_error=self._hub_error, on_end=lambda: self.download_btn.setEnabled(True),
        ))

    # -- cache -------------------------------------------------------------------------------------

    def refresh_cache(self) -> None:
        self.cache_status.setText("Reading the cache…")
        self._jobs.append(run_in_thread(services.list_cached_models, on_result=self._show_cache,
                                        on_error=self._hub_error))

    def _show_cache(self, models: list[CachedModel]) -> None:
        self.cache_table.setRowCount(len(models))
        for r, m in enumerate(models):
            path = str(m.path)
            for c, text in enumerate((m.id, human_bytes(m.size_bytes) if m.size_bytes else "—", path)):
                it = QTableWidgetItem(text)
                it.setData(Qt.ItemDataRole.UserRole, path)
                self.cache_table.setItem(r, c, it)
        self.cache_status.setText(f"{len(models)} models in the cache" if models else "The cache is empty.")

    def _use_cached(self) -> None:
        rows = self.cache_table.selectionModel().selectedRows()
        if rows:
            it = self.cache_table.item(rows[0].row(), 0)
            path = it.data(Qt.ItemDataRole.UserRole)
            self.choose(ModelEntry(path, kind_of(path), name=it.text()))

    def activated(self) -> None:
        if self.cache_table.rowCount() == 0:
            self.refresh_cache()
