"""Hub search, details, download, cache and tokens, against the stand-in Hub with the real client."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import one_error_line
from engine import hub
from engine.core.errors import Cancelled, NibbleError
from engine.core.progress import Reporter
from tests.hubserver import llama_config, tiny_safetensors

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_TestTokenThatMustNeverBePrinted1234"

SHARD1 = {"model.embed_tokens.weight": (1024, 1280)}  # 2.6 MB of F16
SHARD2 = {"model.layers.0.mlp.up_proj.weight": (640, 1024), "lm_head.weight": (256, 1024)}
NEEDED = {
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
}  # fmt: skip


class Recorder(Reporter):
    def __init__(self, cancel_after_bytes: int | None = None):
        self.events: list[tuple[int, int, str]] = []
        self.cancel_after = cancel_after_bytes

    def progress(self, done, total, message="", **extra):
        self.events.append((done, total, message))

    def is_cancelled(self):
        return self.cancel_after is not None and bool(self.events) and self.events[-1][0] >= self.cancel_after


def _index(shards: dict[str, dict]) -> bytes:
    weight_map = {t: f for f, tensors in shards.items() for t in tensors}
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()


@pytest.fixture
def hub_models(hub_server):
    s1, s2 = tiny_safetensors(SHARD1, seed=1), tiny_safetensors(SHARD2, seed=2)
    common = {
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"bos_token": "<s>"}',
        "generation_config.json": b'{"do_sample": false}',
    }
    hub_server.add_model(
        "acme/tiny-chat",
        {
            "config.json": llama_config(),
            **common,
            "model.safetensors.index.json": _index(
                {"model-00001-of-00002.safetensors": SHARD1, "model-00002-of-00002.safetensors": SHARD2}
            ),
            "model-00001-of-00002.safetensors": s1,
            "model-00002-of-00002.safetensors": s2,
            "README.md": b"# tiny chat\n",
            "original/consolidated.pth": b"\0" * 50_000,
            "onnx/model.onnx": b"\1" * 20_000,
        },
        downloads=500, likes=10, last_modified="2024-06-01T00:00:00.000Z", license="mit",
    )  # fmt: skip
    hub_server.add_model(
        "acme/small-instruct",
        {"config.json": llama_config(), **common, "model.safetensors": tiny_safetensors({"w": (64, 64)})},
        downloads=9000, likes=3, last_modified="2023-01-01T00:00:00.000Z",
    )  # fmt: skip
    hub_server.add_model(
        "acme/huge-70b",
        {"config.json": llama_config(), "model.safetensors": tiny_safetensors({"w": (8, 8)})},
        downloads=100, parameters={"BF16": 70_000_000_000}, last_modified="2025-01-01T00:00:00.000Z",
    )  # fmt: skip
    hub_server.add_model(
        "acme/tiny-embed",
        {"config.json": llama_config(), "model.safetensors": tiny_safetensors({"w": (8, 8)})},
        downloads=99999, pipeline_tag="feature-extraction",
    )  # fmt: skip
    hub_server.add_model(
        "acme/gated-chat",
        {"config.json": llama_config(), **common, "model.safetensors": tiny_safetensors({"w": (32, 32)})},
        gated=True, license="llama3",
    )  # fmt: skip
    hub_server.add_model("acme/bin-only", {"config.json": llama_config(), "pytorch_model.bin": b"\0" * 30_000})
    hub_server.add_model(
        "acme/gguf-only", {"README.md": b"ggufs", "tiny-Q4_K_M.gguf": b"GGUF" + b"\0" * 40_000, "tiny-Q8_0.gguf": b"GGUF" + b"\1" * 60_000}
    )
    hub_server.add_model(
        "acme/custom-code",
        {
            "config.json": llama_config(model_type="acme_net", auto_map={"AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"}),
            "modeling_acme.py": b"import os\n",
            "model.safetensors": tiny_safetensors({"w": (8, 8)}),
        },
    )
    hub_server.shards = (s1, s2)
    return hub_server


def _snapshot_files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


# --- search and details ------------------------------------------------------------------------------


def test_search_sorts_filters_and_reports_sizes(hub_models):
    by_downloads = hub.search_models("acme")
    ids = [m.id for m in by_downloads]
    assert "acme/tiny-embed" not in ids  # not a text-generation model
    assert ids[:2] == ["acme/small-instruct", "acme/tiny-chat"]
    recent = [m.id for m in hub.search_models("acme", sort="recent")]
    assert recent[:2] == ["acme/huge-70b", "acme/tiny-chat"]
    small = [m.id for m in hub.search_models("acme", max_params=8_000_000_000)]
    assert "acme/huge-70b" not in small and "acme/tiny-chat" in small
    assert [m.id for m in hub.search_models("acme", min_params=1_000_000_000)] == ["acme/huge-70b"]

    tiny = next(m for m in by_downloads if m.id == "acme/tiny-chat")
    params = 1024 * 1280 + 640 * 1024 + 256 * 1024
    assert tiny.params == params and tiny.safetensors_bytes == 2 * params  # F16
    assert (tiny.downloads, tiny.likes, tiny.license, tiny.gated) == (500, 10, "mit", False)
    assert tiny.last_modified.year == 2024
    huge = next(m for m in hub.search_models("huge") if m.id == "acme/huge-70b")
    assert huge.params == 70_000_000_000 and huge.safetensors_bytes == 140_000_000_000
    assert next(m for m in hub.search_models("gated")).gated


def test_model_details_read_only_safetensors_headers(hub_models):
    m = hub.model_details("acme/tiny-chat")
    s1, s2 = hub_models.shards
    assert m.safetensors_bytes == len(s1) + len(s2)
    shapes = {t.name: (t.dtype, t.shape, t.file) for t in m.tensors}
    assert shapes["model.embed_tokens.weight"] == ("F16", [1024, 1280], "model-00001-of-00002.safetensors")
    assert shapes["lm_head.weight"] == ("F16", [256, 1024], "model-00002-of-00002.safetensors")
    assert m.config["num_hidden_layers"] == 2
    assert m.download_bytes < len(s1) + len(s2) + 10_000  # no README, .pth or .onnx counted
    # weights were never downloaded: every shard request asked for a small header range
    shard_gets = [r for r in hub_models.requests if r["method"] == "GET" and str(r.get("file", "")).endswith(".safetensors")]
    assert shard_gets and all(r["range"] and r["range"].startswith("bytes=0-") for r in shard_gets)
    assert not (hub_models.cache / "models--acme--tiny-chat").exists()  # headers and JSON are read, not stored

    # the same view the estimator gets from a downloaded folder, before downloading
    src = hub.remote_source("acme/tiny-chat")
    assert src.param_count == m.params == 1024 * 1280 + 640 * 1024 + 256 * 1024
    assert src.total_bytes == 2 * src.param_count and src.config["hidden_size"] == 64


def test_gated_model_details_without_token_still_show_files(hub_models):
    m = hub.model_details("acme/gated-chat")
    assert m.gated and m.needs_token and m.tensors == []
    assert any(f.name == "model.safetensors" for f in m.files)
    with pytest.raises(NibbleError, match="acme/gated-chat is gated"):
        hub.remote_source("acme/gated-chat")


# --- download ----------------------------------------------------------------------------------------


def test_download_only_needed_files_with_byte_progress(hub_models):
    rec = Recorder()
    snap = hub.download_model("acme/tiny-chat", reporter=rec)
    assert _snapshot_files(snap) == NEEDED
    s1, s2 = hub_models.shards
    assert (snap / "model-00001-of-00002.safetensors").read_bytes() == s1
    assert (snap / "model-00002-of-00002.safetensors").read_bytes() == s2
    done = [d for d, _, _ in rec.events]
    total = rec.events[-1][1]
    assert total == sum((snap / n).stat().st_size for n in NEEDED)
    assert done == sorted(done) and done[-1] == total and len(done) > 5
    assert not hub_models.file_requests("README.md") and not hub_models.file_requests("original/consolidated.pth")

    # the standard cache layout: huggingface_hub itself finds the files, offline
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    found = try_to_load_from_cache("acme/tiny-chat", "model-00002-of-00002.safetensors", cache_dir=hub_models.cache)
    assert found and Path(found).read_bytes() == s2
    assert not scan_cache_dir(hub_models.cache).warnings

    # a second call fetches nothing
    before = len(hub_models.requests)
    hub.download_model("acme/tiny-chat")
    assert not [r for r in hub_models.requests[before:] if r["method"] == "GET" and r.get("file")]


def test_network_drop_is_resumed_later_from_where_it_stopped(hub_models):
    shard = "model-00001-of-00002.safetensors"
    hub_models.drop_connection("acme/tiny-chat", shard, after_bytes=1_000_000, times=1)
    with pytest.raises(NibbleError, match=r"network lost .*run `nibble download acme/tiny-chat` again to resume"):
        hub.download_model("acme/tiny-chat", retries=0)
    blobs = hub_models.cache / "models--acme--tiny-chat" / "blobs"
    partial = list(blobs.glob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size == 1_000_000
    assert not (hub.cached_snapshot("acme/tiny-chat") or Path("/nonexistent")).joinpath(shard).exists()

    snap = hub.download_model("acme/tiny-chat")
    assert (snap / shard).read_bytes() == hub_models.shards[0]
    assert any(r["range"] == "bytes=1000000-" for r in hub_models.file_requests(shard))
    assert not list(blobs.glob("*.incomplete"))


def test_network_drop_is_retried_within_one_download(hub_models):
    shard = "model-00002-of-00002.safetensors"
    hub_models.drop_connection("acme/tiny-chat", shard, after_bytes=300_000, times=2)
    snap = hub.download_model("acme/tiny-chat")
    assert (snap / shard).read_bytes() == hub_models.shards[1]
    assert [r["range"] for r in hub_models.file_requests(shard)][-2:] == ["bytes=300000-", "bytes=600000-"]


def test_cancel_keeps_the_partial_file_and_the_next_run_resumes_it(hub_models):
    with pytest.raises(Cancelled):
        hub.download_model("acme/tiny-chat", reporter=Recorder(cancel_after_bytes=1_500_000))
    storage = hub_models.cache / "models--acme--tiny-chat"
    partial = list(storage.rglob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    kept = partial[0].stat().st_size
    assert not [p for p in storage.rglob("*.safetensors")]  # nothing half-written under a final name
    shard = next(n for n, d in hub_models.repos["acme/tiny-chat"].files.items()
                 if hashlib.sha256(d).hexdigest() == partial[0].name.split(".")[0])
    before = len(hub_models.requests)
    snap = hub.download_model("acme/tiny-chat")
    gets = [r for r in hub_models.requests[before:] if r["method"] == "GET" and r.get("file") == shard]
    assert gets and gets[0]["range"] == f"bytes={kept}-"  # resumed where the cancel stopped it
    assert (snap / shard).read_bytes() == hub_models.repos["acme/tiny-chat"].files[shard]
    assert not list(storage.rglob("*.incomplete"))


def test_free_disk_is_checked_before_downloading(hub_models, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1_000_000, 1_000_000))
    with pytest.raises(NibbleError, match=r"not enough disk space for acme/tiny-chat: the download needs \d\.\d MiB"):
        hub.download_model("acme/tiny-chat")
    assert not hub_models.file_requests("model-00001-of-00002.safetensors")


# --- access and bad input ----------------------------------------------------------------------------


def test_gated_model_needs_a_token_and_the_token_is_never_shown(hub_models, capsys, caplog):
    with pytest.raises(NibbleError) as err:
        hub.download_model("acme/gated-chat")
    assert "acme/gated-chat is gated" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert "nibble login" in str(err.value)

    with pytest.raises(NibbleError, match="refused the token") as bad:
        hub.save_token("hf_WrongTokenWrongToken999")
    assert "hf_WrongTokenWrongToken999" not in str(bad.value)

    hub_models.add_token(TOKEN, user="ada")
    assert hub.save_token(TOKEN) == "ada"
    status = hub.token_status(check_online=True)
    assert (status.present, status.source, status.user) == (True, "stored login", "ada")
    assert status.masked != TOKEN and TOKEN not in repr(status)
    snap = hub.download_model("acme/gated-chat")
    assert (snap / "model.safetensors").exists()
    # the token goes to the Hub, never to the CDN host the weights are served from
    assert all(r["authorized"] for r in hub_models.file_requests("model.safetensors", method="HEAD"))
    cdn = [r for r in hub_models.file_requests("model.safetensors") if r["path"].startswith("/cdn/")]
    assert [r["authorized"] for r in cdn] == [False]
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text


def test_unknown_model_says_so(hub_models):
    with pytest.raises(NibbleError, match=r"no model 'acme/nope' on the Hugging Face Hub"):
        hub.download_model("acme/nope")
    with pytest.raises(NibbleError, match=r"no model 'acme/nope'"):
        hub.model_details("acme/nope")


def test_repositories_nibble_cannot_use_are_refused_with_what_they_have(hub_models):
    with pytest.raises(NibbleError, match=r"only PyTorch checkpoint files \(pytorch_model\.bin\).*safetensors"):
        hub.download_model("acme/bin-only")
    with pytest.raises(NibbleError) as gguf:
        hub.check_repo("acme/gguf-only")
    assert "only GGUF files (tiny-Q4_K_M.gguf, tiny-Q8_0.gguf)" in str(gguf.value)
    assert "nibble download acme/gguf-only --gguf tiny-Q4_K_M.gguf" in str(gguf.value)
    path = hub.download_model("acme/gguf-only", gguf="tiny-Q8_0.gguf")
    assert path.name == "tiny-Q8_0.gguf" and path.read_bytes()[:4] == b"GGUF"
    assert hub.resolve_model(str(path)) == path.resolve()
    with pytest.raises(NibbleError, match=r"'acme_net'.*trust_remote_code stays off"):
        hub.download_model("acme/custom-code")
    assert not hub_models.file_requests("modeling_acme.py")


# --- offline -----------------------------------------------------------------------------------------


def test_offline_search_fails_fast_while_cache_and_folders_work(hub_models, monkeypatch):
    import huggingface_hub.constants as c

    snap = hub.download_model("acme/small-instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    n = len(hub_models.requests)
    with pytest.raises(NibbleError, match=r"^offline: .*local cache and local folders still work"):
        hub.search_models("acme")
    assert len(hub_models.requests) == n  # refused without asking the network, so it cannot hang on it
    cached = hub.list_cached_models()
    assert [(m.id, m.complete, m.has_safetensors) for m in cached] == [("acme/small-instruct", True, True)]
    assert cached[0].size_bytes == sum(p.stat().st_size for p in (cached[0].path.parent.parent / "blobs").iterdir())
    assert hub.resolve_model("acme/small-instruct") == snap
    assert len(hub_models.requests) == n  # nothing was asked of the network

    # no connection at all (nothing listens there): an "offline:" error too, not a hang or a traceback
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(NibbleError, match=r"^offline: cannot reach http://127\.0\.0\.1:9"):
        hub.search_models("acme")
    with pytest.raises(NibbleError, match=r"^offline: cannot reach"):
        hub.model_details("acme/small-instruct")


def test_resolve_model_accepts_folders_gguf_and_says_what_is_wrong(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_bytes(llama_config())
    (folder / "model.safetensors").write_bytes(tiny_safetensors({"w": (4, 4)}))
    assert hub.resolve_model(str(folder)) == folder.resolve()
    (folder / "config.json").write_bytes(llama_config(auto_map={"AutoModel": "x.Y"}))
    with caplog.at_level("WARNING", logger="engine"):
        assert hub.resolve_model(folder) == folder.resolve()  # loaded with transformers' own llama code
    assert [r.message for r in caplog.records if "x.py" in r.message and "never runs or copies" in r.message]
    (folder / "config.json").write_bytes(llama_config(model_type="gpt2"))
    with pytest.raises(NibbleError, match="contradicts itself"):
        hub.resolve_model(folder)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert hub.resolve_model(gguf) == gguf.resolve()
    with pytest.raises(NibbleError, match=r"download it first: nibble download someone/model"):
        hub.resolve_model("someone/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NibbleError, match="neither config.json"):
        hub.resolve_model(empty)


# --- CLI ---------------------------------------------------------------------------------------------


def _cli(*args, stdin: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True, text=True, input=stdin,
        timeout=120,
    )


def test_cli_search_download_models_login(hub_models):
    out = _cli("search", "acme", "--max-params", "8B")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "PARAMS", "SIZE"]
    assert lines[1].startswith("acme/small-instruct") and "acme/huge-70b" not in out.stdout

    out = _cli("download", "acme/tiny-chat")
    assert out.returncode == 0, out.stderr
    snap = Path(out.stdout.strip())
    assert _snapshot_files(snap) == NEEDED
    assert "100.0%" in out.stderr

    out = _cli("models")
    assert out.returncode == 0, out.stderr
    assert "acme/tiny-chat" in out.stdout and "original" in out.stdout

    out = _cli("download", "acme/gated-chat")
    one_error_line(out, "acme/gated-chat", "is gated")

    hub_models.add_token(TOKEN)
    out = _cli("login", "--stdin", stdin=TOKEN + "\n")
    assert out.returncode == 0, out.stderr
    out2 = _cli("login", "--status")
    assert "stored login" in out2.stdout
    assert TOKEN not in out.stdout + out.stderr + out2.stdout + out2.stderr


def test_search_marks_what_nibble_converts_and_points_at_a_gguf(hub_models):
    """From config.json alone, before any download: which results convert, and what to do when one cannot."""
    gpt2 = llama_config(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    hub_models.add_model("acme/odd-gpt", {"config.json": gpt2, "model.safetensors": tiny_safetensors({"w": (8, 8)}),
                                          "odd-gpt-F16.gguf": b"GGUF" + b"\0" * 1000})
    found = {m.id: m for m in hub.search_models("acme")}
    assert found["acme/tiny-chat"].convertible is True and found["acme/tiny-chat"].family == "Llama, Mistral"
    odd = found["acme/odd-gpt"]
    assert odd.convertible is False and odd.architecture == "GPT2LMHeadModel"
    assert hub.conversion_note(found["acme/tiny-chat"]) is None
    note = hub.conversion_note(hub.model_details("acme/odd-gpt"))
    assert "GPT2LMHeadModel" in note and "odd-gpt-F16.gguf" in note and "--gguf" in note
    out = _cli("search", "acme", "--json")
    rows = {r["id"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["acme/odd-gpt"]["convertible"] is False and rows["acme/tiny-chat"]["convertible"] is True
    table = _cli("search", "odd-gpt").stdout.splitlines()
    assert "CONVERTS" in table[0] and " no " in table[1]


def test_names_read_in_the_app_are_kept_for_its_child_processes(tmp_path, monkeypatch):
    """Where transformers is loaded in the app, the model-type names the repository-code policy needs are kept in
    Nibble's data folder, and a child process (the calibration count) reads them there instead of importing torch."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    import engine.models.resolve as resolve
    from engine.core.spawn import child_env

    monkeypatch.setenv("NIBBLE_HOME", str(tmp_path))
    monkeypatch.setattr(resolve, "NAMES_FROM_CHILD", True)
    resolve.transformers_names()
    kept = list((tmp_path / "transformers-names").glob("*.json"))
    assert [p.name for p in kept] == [f"{transformers.__version__}.json"]
    d = json.loads(kept[0].read_text(encoding="utf-8"))
    assert set(d["types"]) == set(CONFIG_MAPPING_NAMES) and d["causal_lm"] == dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    code = ("import sys, engine.models.resolve as r; r.NAMES_FROM_CHILD = True; "
            "t, m = r.transformers_names(); print(len(t), m['llama'], 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(NIBBLE_HOME=str(tmp_path)), capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == [str(len(CONFIG_MAPPING_NAMES)), MODEL_FOR_CAUSAL_LM_MAPPING_NAMES["llama"], "False"]


_QUANTIZE_AND_SAY_WHAT_LOADED = (
    "import sys\n"
    "from engine.commands.cli import main\n"
    "rc = main(['quantize', sys.argv[1], '--type', 'Q8_0', '--out', sys.argv[2]])\n"
    "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
)


def test_a_gguf_quantize_reads_the_kept_names_instead_of_importing_torch(tmp_path):
    """The first command keeps transformers' model-type names in the data folder; later ones read them there and
    quantize to GGUF without importing torch or transformers (seconds of a small model's command), writing the
    same file. A damaged names file is read again from transformers and replaced."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from engine.core.spawn import child_env
    from engine.models import demo

    env = child_env(NIBBLE_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))

    def run(out: Path) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", _QUANTIZE_AND_SAY_WHAT_LOADED, str(demo.DEMO_DIR), str(out)],
                              env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split()[-3:]

    assert run(tmp_path / "first.gguf") == ["0", "True", "True"]
    kept = list((tmp_path / "home" / "transformers-names").glob("*.json"))
    assert len(kept) == 1 and set(json.loads(kept[0].read_text())["types"]) == set(CONFIG_MAPPING_NAMES)
    assert run(tmp_path / "second.gguf") == ["0", "False", "False"]
    assert (tmp_path / "second.gguf").read_bytes() == (tmp_path / "first.gguf").read_bytes()

    kept[0].write_text('{"types": 7}', encoding="utf-8")
    assert run(tmp_path / "third.gguf") == ["0", "True", "True"]
    assert set(json.loads(kept[0].read_text())["types"]) == set(CONFIG_MAPPING_NAMES)
    assert (tmp_path / "third.gguf").read_bytes() == (tmp_path / "first.gguf").read_bytes()
