"""The estimate against llama.cpp itself: per-tensor types (dry run), file sizes (real quantization),
KV cache (llama.cpp's own buffer), plus Hugging Face folders, Hub ids and the CLI."""

from __future__ import annotations

import ctypes
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from engine.estimate import Machine, estimate, file_types, kv_cache_bytes, load_plan
from engine.estimate.file_size import layout
from engine.estimate.tensor_types import parse_file_type

sys.path.insert(0, str(Path(__file__).parent))
from clitools import one_error_line  # noqa: E402
from gguf_factory import llama_tensors, write_llama_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TYPES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0",
         "IQ4_XS", "IQ3_M", "IQ2_M", "F16"]

SHAPES = {
    # GQA 4:1 with every dimension a multiple of 256: the K-quant mixtures apply as designed
    "dense": dict(n_layer=8, n_embd=256, n_head=8, n_head_kv=2, n_ff=512, n_vocab=600),
    # tied embeddings and rows that do not divide into 256- or 32-blocks: fallbacks
    "tied_odd": dict(n_layer=3, n_embd=96, n_head=4, n_head_kv=4, n_ff=200, n_vocab=500, tied=True),
    # 8 experts: attn_v/attn_k promoted, expert tensors 3-D
    "moe": dict(n_layer=4, n_embd=256, n_head=8, n_head_kv=8, n_ff=256, n_vocab=512, n_expert=8,
                n_expert_used=2),
}


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    d = tmp_path_factory.mktemp("est")
    return {k: write_llama_gguf(d / f"{k}.gguf", **v) for k, v in SHAPES.items()}


def _dry_run(path: Path, types: list[str]) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "llama_dry_run.py"), str(path), *types],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def _assert_estimate_is_the_file(plan, qtype: str, out: Path) -> None:
    """The estimate against the quantized file, byte for byte: header (key/value section and tensor infos),
    tensor data, bits per weight, the weights in memory and each tensor's type."""
    import gguf

    reader = gguf.GGUFReader(out)
    size = out.stat().st_size
    est = estimate(plan, qtype)
    lay = layout(plan, parse_file_type(qtype))
    assert lay.header_bytes == reader.data_offset, qtype
    assert est.file_bytes - lay.header_bytes == size - reader.data_offset, qtype
    assert est.file_bytes == size, qtype
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    assert est.n_params == n_params
    assert est.bits_per_weight == pytest.approx(8 * tensor_bytes / n_params, rel=1e-12), qtype
    assert {k: n for k, (n, _) in est.tensor_types.items()} == dict(Counter(t.tensor_type.name for t in reader.tensors))
    # every weight is memory-mapped from the file on a CPU run
    mapped = next(p for p in est.run.parts if p.name == "weights (memory-mapped file)")
    assert mapped.bytes == tensor_bytes, qtype
    # and the quantized file itself: its plan reports the same tensor types
    assert {x.name: x.src_type for x in load_plan(out).tensors} == dict(lay.types)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_tensor_types_match_llama_dry_run(ggufs, shape):
    plan = load_plan(ggufs[shape])
    ref = _dry_run(ggufs[shape], TYPES)
    for t in TYPES:
        mine = dict(layout(plan, parse_file_type(t)).types)
        assert mine == ref[t]["types"], t
        # llama.cpp reports the quantized size in MiB with two decimals
        assert abs(layout(plan, parse_file_type(t)).tensor_bytes / 2**20 - ref[t]["quant_mib"]) < 0.006, t


@pytest.mark.parametrize("shape,types", [("dense", ["Q4_K_M", "Q3_K_S", "Q5_K_M", "Q8_0"]),
                                         ("tied_odd", ["Q4_K_M", "Q6_K", "IQ4_XS"])])
def test_file_size_matches_quantized_file(ggufs, tmp_path, shape, types):
    import llama_cpp

    plan = load_plan(ggufs[shape])
    for t in types:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{t}")
        params.nthread = 1
        out = tmp_path / f"{t}.gguf"
        assert llama_cpp.llama_model_quantize(str(ggufs[shape]).encode(), str(out).encode(),
                                              ctypes.byref(params)) == 0
        _assert_estimate_is_the_file(plan, t, out)


def test_kv_cache_matches_llama_cpp(ggufs):
    """llama.cpp logs its KV buffer; the estimate's KV cache must equal it (f16 and q8_0)."""
    path = ggufs["dense"]
    plan = load_plan(path)
    for ctx, kv in ((512, "f16"), (1000, "f16"), (1024, "q8_0")):
        args = [sys.executable, str(ROOT / "benchmarks" / "llama_rss.py"), str(path), str(ctx)]
        if kv != "f16":
            args.append(kv)
        out = subprocess.run(args + ["--short"], capture_output=True, text=True, check=True, cwd=ROOT)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        assert round(kv_cache_bytes(plan, ctx, kv) / 2**20, 2) == measured["kv_mib"], (ctx, kv)


def _quantize_with_llama_cpp(src: Path, qtype: str, out: Path) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params)) == 0
    return out


def test_run_memory_parts_and_gpu_split(ggufs, tmp_path):
    import gguf

    plan = load_plan(ggufs["dense"])
    cpu = estimate(plan, "Q4_K_M", ctx=2048)
    assert cpu.run.vram_bytes == 0
    assert cpu.run.ram_bytes == sum(p.bytes for p in cpu.run.parts if p.where == "ram")
    labels = {p.name: p.exact for p in cpu.run.parts}
    assert labels["KV cache"] is True and labels["compute buffers"] is False
    half = estimate(plan, "Q4_K_M", ctx=2048, gpu_layers=4)
    assert half.run.kv_cache_bytes == cpu.run.kv_cache_bytes
    assert 0 < half.run.vram_bytes and half.run.ram_bytes < cpu.run.ram_bytes
    # the exact parts, against the file llama.cpp writes: the last 4 of 8 blocks go to the GPU with half the KV
    tensors = gguf.GGUFReader(_quantize_with_llama_cpp(ggufs["dense"], "Q4_K_M", tmp_path / "q.gguf")).tensors
    on_gpu = sum(int(t.n_bytes) for t in tensors if t.name.startswith(("blk.4.", "blk.5.", "blk.6.", "blk.7.")))
    parts = {p.name: p.bytes for p in half.run.parts}
    assert parts["weights on GPU"] == on_gpu
    assert parts["weights (memory-mapped file)"] == sum(int(t.n_bytes) for t in tensors) - on_gpu
    assert parts["KV cache on GPU"] == parts["KV cache"] == cpu.run.kv_cache_bytes // 2
    full = estimate(plan, "Q4_K_M", ctx=2048, gpu_layers=99)
    assert full.run.vram_bytes > half.run.vram_bytes
    # longer context and a quantized KV cache move memory in the expected directions
    assert estimate(plan, "Q4_K_M", ctx=8192).run.kv_cache_bytes == 4 * cpu.run.kv_cache_bytes
    assert estimate(plan, "Q4_K_M", ctx=2048, kv_type="q8_0").run.kv_cache_bytes < cpu.run.kv_cache_bytes


def test_fit_verdict_suggests_largest_setting(ggufs):
    plan = load_plan(ggufs["dense"])
    need = estimate(plan, "Q8_0", ctx=32768).run.ram_needed_bytes
    small = Machine(free_ram_bytes=need - 1, free_vram_bytes=0, free_disk_bytes=10**12, disk_path="/")
    est = estimate(plan, "Q8_0", ctx=32768, machine=small)
    assert est.fit.fits is False and est.fit.problems
    sugg = est.fit.suggestion
    assert sugg and "ctx" in sugg and sugg["ctx"] < 32768
    assert estimate(plan, "Q8_0", ctx=sugg["ctx"], machine=small).fit.fits
    big = Machine(free_ram_bytes=10**12, free_vram_bytes=0, free_disk_bytes=10**12, disk_path="/")
    assert estimate(plan, "Q8_0", ctx=32768, machine=big).fit.fits
    no_disk = Machine(free_ram_bytes=10**12, free_vram_bytes=0, free_disk_bytes=1000, disk_path="/")
    assert estimate(plan, "Q8_0", machine=no_disk).fit.quantize_fits is False
    # GPU layers on a machine without a GPU: the advice is to drop them, not "nothing fits"
    no_gpu = estimate(plan, "Q8_0", ctx=2048, gpu_layers=999, machine=big).fit
    assert not no_gpu.fits and no_gpu.suggestion == {"gpu_layers": 0}
    assert no_gpu.suggestion_text == "no GPU memory here: use 0 GPU layers"
    both = estimate(plan, "Q8_0", ctx=32768, gpu_layers=999, machine=small).fit
    assert both.suggestion["gpu_layers"] == 0 and both.suggestion["ctx"] < 32768
    assert both.suggestion_text.startswith("no GPU memory here: use 0 GPU layers and a context of")


def test_tight_means_under_a_fifth_of_the_free_memory_to_spare(ggufs):
    from engine.estimate import TIGHT_MARGIN

    plan = load_plan(ggufs["dense"])
    need = estimate(plan, "Q8_0", ctx=4096).run.ram_needed_bytes

    def verdict(free_ram: int) -> str:
        m = Machine(free_ram_bytes=free_ram, free_vram_bytes=0, free_disk_bytes=10**12, disk_path="/")
        return estimate(plan, "Q8_0", ctx=4096, machine=m).fit.verdict

    assert TIGHT_MARGIN == 0.2
    assert verdict(need - 1) == "no"
    assert verdict(need) == "tight"  # fits, nothing to spare
    assert verdict(int(need / 0.8) - 1000) == "tight"  # just under a fifth to spare
    assert verdict(int(need / 0.8) + 1000) == "fits"
    assert estimate(plan, "Q4_K_M", ctx=4096).run.total_bytes == sum(
        p.bytes for p in estimate(plan, "Q4_K_M", ctx=4096).run.parts)  # RAM and VRAM: every part counted once


def _tiny_hf_model(folder: Path, rope_llama3: bool = False) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, max_position_embeddings=512,
                      tie_word_embeddings=False)
    if rope_llama3:
        cfg.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    return dict(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=160, n_vocab=300)


def test_hf_folder_plan_has_gguf_names_and_shapes(tmp_path):
    shape = _tiny_hf_model(tmp_path / "m", rope_llama3=True)
    plan = load_plan(tmp_path / "m")
    expected = {n: ne for n, ne, _ in llama_tensors(**shape)}
    expected["rope_freqs.weight"] = (8,)
    assert {t.name: t.ne for t in plan.tensors} == expected
    types = {t.name: t.src_type for t in plan.tensors}
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.0.attn_norm.weight"] == "F32"
    assert (plan.n_layer, plan.n_head_kv, plan.head_dim_k, plan.n_vocab) == (2, 2, 16, 300)


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Serves one folder as repo ``tiny/model`` at main, with HEAD and byte ranges."""

    root: Path
    full_weight_reads: list

    def log_message(self, *a):
        pass

    def _file(self):
        prefix = "/tiny/model/resolve/main/"
        if not self.path.startswith(prefix):
            return None
        p = self.root / self.path[len(prefix):].split("?")[0]
        return p if p.is_file() else None

    def _headers(self, p: Path, length: int, status: int = 200):
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"' + hashlib.sha1(p.name.encode()).hexdigest() + '"')
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def _missing(self) -> bool:
        if self._file() is not None:
            return False
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_HEAD(self):
        if not self._missing():
            p = self._file()
            self._headers(p, p.stat().st_size)

    def do_GET(self):
        if self._missing():
            return
        p = self._file()
        data = p.read_bytes()
        rng = self.headers.get("Range") or self.headers.get("range")
        if rng:
            a, b = rng.split("=")[1].split("-")
            chunk = data[int(a): min(int(b) + 1, len(data))]
            self._headers(p, len(chunk), 206)
            self.wfile.write(chunk)
            return
        if p.suffix == ".safetensors":
            self.full_weight_reads.append(p.name)
        self._headers(p, len(data))
        self.wfile.write(data)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "engine", "estimate", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env)


def test_hub_id_estimate_reads_headers_only(tmp_path):
    folder = tmp_path / "m"
    _tiny_hf_model(folder)
    handler = type("H", (_HubHandler,), {"root": folder, "full_weight_reads": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
        env.pop("HF_TOKEN", None)
        hub = _cli("tiny/model", "--type", "Q8_0", "--json", env=env)
        assert hub.returncode == 0, hub.stderr
    finally:
        server.shutdown()
    local = _cli(str(folder), "--type", "Q8_0", "--json", env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert local.returncode == 0, local.stderr
    h, loc = json.loads(hub.stdout)["types"][0], json.loads(local.stdout)["types"][0]
    assert h["file_bytes"] == loc["file_bytes"] and h["tensor_types"] == loc["tensor_types"]
    assert h["run"]["kv_cache_bytes"] == loc["run"]["kv_cache_bytes"] > 0
    assert handler.full_weight_reads == []


def test_cli_json_names_and_errors(ggufs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = _cli(str(ggufs["dense"]), "--json", "--ctx", "1024", env=env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [t["type"] for t in data["types"]]
    for t in data["types"]:
        assert {"type", "file_bytes", "bits_per_weight", "run", "quantize", "fits"} <= set(t)
        assert {"ram_bytes", "vram_bytes", "kv_cache_bytes"} <= set(t["run"])
        assert {"peak_ram_bytes", "temp_disk_bytes"} <= set(t["quantize"])
        assert isinstance(t["fits"], bool)
    sizes = [t["file_bytes"] for t in data["types"]]
    assert sizes == sorted(sizes)
    table = _cli(str(ggufs["dense"]), "--type", "Q4_K_M", env=env)
    assert table.returncode == 0 and "exact" in table.stdout and "estimated" in table.stdout
    one_error_line(_cli(str(ggufs["dense"]), "--type", "Q9_X", env=env), "Q9_X")
    one_error_line(_cli("/nonexistent/model.gguf", env=env), "/nonexistent/model.gguf")
    one_error_line(_cli(str(ggufs["dense"]), "--ctx", "0", env=env), "--ctx 0: must be a positive number of tokens")


def test_every_listed_type_is_estimated(ggufs):
    plan = load_plan(ggufs["moe"])
    names = [t for t in file_types()]
    assert "Q4_K_M" in names and "IQ4_XS" in names
    for t in names:
        est = estimate(plan, t)
        assert est.file_bytes > 0 and est.bits_per_weight > 0


@pytest.mark.parametrize("family,types", [("llama3", ["Q4_K_M", "Q8_0", "Q3_K_M"]), ("qwen2", ["Q4_K_S", "Q6_K"])])
def test_folder_estimate_matches_nibble_quantize(tmp_path, family, types):
    """From a Hugging Face folder, the size predicted is the size of the file ``nibble quantize`` writes."""
    from tinymodels import make_model

    from engine.gguf.quantize import quantize

    folder = make_model(tmp_path / family, family)
    plan = load_plan(folder)
    for t in types:
        out = tmp_path / f"{family}-{t}.gguf"
        quantize(folder, t, out, threads=1)
        _assert_estimate_is_the_file(plan, t, out)
