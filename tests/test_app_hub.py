"""The wizard's model page against the stand-in Hub: search results, download, the local cache."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.hubserver import llama_config, tiny_safetensors


def test_search_download_and_cache(qtbot, hub_server, window):
    common = {"tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
              "tokenizer_config.json": b'{"bos_token": "<s>"}'}
    hub_server.add_model("acme/small-instruct",
                         {"config.json": llama_config(), **common, "model.safetensors": tiny_safetensors({"w": (64, 64)})},
                         downloads=9000, likes=3, last_modified="2023-01-01T00:00:00.000Z")
    hub_server.add_model("acme/gated-chat",
                         {"config.json": llama_config(), **common, "model.safetensors": tiny_safetensors({"w": (32, 32)})},
                         downloads=12, gated=True)
    window.show_view("Quantize")
    page = window.views["Quantize"].model_page
    assert page.search_btn.isEnabled()
    page.query.setText("acme")
    page.search_btn.click()
    qtbot.waitUntil(lambda: page.results.rowCount() == 2, timeout=30000)
    rows = {page.results.item(r, 0).text(): [page.results.item(r, c).text() for c in range(4)]
            for r in range(2)}
    assert rows["acme/small-instruct"][2] == "9,000" and rows["acme/small-instruct"][3] == "open"
    assert rows["acme/small-instruct"][1].endswith(("B", "KiB"))
    assert rows["acme/gated-chat"][3].startswith("gated")
    row = next(r for r in range(2) if page.results.item(r, 0).text() == "acme/small-instruct")
    page.results.selectRow(row)
    with qtbot.waitSignal(page.model_chosen, timeout=60000) as blocker:
        page.download_btn.click()
    entry = blocker.args[0]
    assert entry.name == "acme/small-instruct"
    import pathlib

    assert (pathlib.Path(entry.path) / "config.json").is_file()
    assert window.views["Quantize"].next_btn.isEnabled()
    # the download is in the local cache now
    page.tabs.setCurrentIndex(1)
    page.refresh_cache()
    qtbot.waitUntil(lambda: page.cache_table.rowCount() == 1, timeout=30000)
    assert page.cache_table.item(0, 0).text() == "acme/small-instruct"
    assert page.cache_table.item(0, 2).data(Qt.ItemDataRole.UserRole) == entry.path
