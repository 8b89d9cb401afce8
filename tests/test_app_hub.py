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


def test_the_wizard_says_before_downloading_what_nibble_cannot_convert(qtbot, hub_server, window, tiny_gguf):
    """A result whose config.json names an architecture Nibble does not convert is marked in the table;
    selecting it says so, and offers the repository's F16 GGUF to requantize instead (or nothing to download)."""
    gpt2 = llama_config(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    hub_server.add_model("acme/odd-gpt", {"config.json": gpt2, "model.safetensors": tiny_safetensors({"w": (8, 8)}),
                                          "odd-gpt-F16.gguf": tiny_gguf.read_bytes()})
    hub_server.add_model("acme/odd-bare", {"config.json": gpt2, "model.safetensors": tiny_safetensors({"w": (8, 8)})})
    hub_server.add_model("acme/plain", {"config.json": llama_config(), "model.safetensors": tiny_safetensors({"w": (8, 8)})})
    window.show_view("Quantize")
    page = window.views["Quantize"].model_page
    page.query.setText("acme")
    page.search_btn.click()
    qtbot.waitUntil(lambda: page.results.rowCount() == 3, timeout=30000)
    row = {page.results.item(r, 0).text(): r for r in range(3)}
    assert page.results.item(row["acme/odd-gpt"], 4).text() == "no (GPT2LMHeadModel)"
    assert page.results.item(row["acme/plain"], 4).text().startswith("yes")

    page.results.selectRow(row["acme/odd-bare"])
    qtbot.waitUntil(lambda: "Look on the Hub for a GGUF" in page.banner.label.text(), timeout=30000)
    assert not page.download_btn.isEnabled()

    page.results.selectRow(row["acme/plain"])
    assert page.download_btn.isEnabled() and page.banner.isHidden()

    page.results.selectRow(row["acme/odd-gpt"])
    qtbot.waitUntil(lambda: page.download_btn.text() == "Download its GGUF and use", timeout=30000)
    assert "odd-gpt-F16.gguf" in page.banner.label.text() and "cannot convert" in page.banner.label.text()
    with qtbot.waitSignal(page.model_chosen, timeout=60000) as blocker:
        page.download_btn.click()
    entry = blocker.args[0]
    import pathlib

    assert pathlib.Path(entry.path).name == "odd-gpt-F16.gguf" and entry.kind == "gguf"
    assert pathlib.Path(entry.path).read_bytes() == tiny_gguf.read_bytes()
