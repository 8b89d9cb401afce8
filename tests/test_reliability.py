"""Nibble against careless and hostile input, through the CLI: every case must end with exit 2 and one line
``nibble: error: ...`` naming the file or setting, no traceback, no file changed (inputs and unrelated files
alike), nothing written outside the target, no temporary and no process left behind.

Argument and file cases run in this process through ``engine.commands.cli.main`` (most stop before loading
anything); a sample of them, the full-disk cases (RLIMIT_FSIZE) and the signals run as real processes. The
hostile Hub is tests/hubserver.py in its lying mode. With ``NIBBLE_WRITE_RESULTS=1`` the module rewrites the
reliability table in benchmarks/RESULTS.md from what it saw.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from clitools import ctrl_c_reaches_it
from reliability_cases import CASES, ROOT, build_workspace, changes, snapshot
from tests.hubserver import llama_config, tiny_safetensors

OUTCOMES: list[tuple[str, str]] = []  # (kind, outcome) of every case run


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("reliability")
    build_workspace(ws)
    (ws / "nibble-home").mkdir()  # Nibble's data folder (NIBBLE_HOME below), there as after any earlier use
    return ws


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    if os.environ.get("NIBBLE_WRITE_RESULTS") == "1" and OUTCOMES:
        write_results_table(ROOT / "benchmarks" / "RESULTS.md")


def _live_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}


def run_in_process(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """``nibble ARGV`` in this process, as a fresh CLI process would run it: without the app's setting that
    keeps transformers' names in the data folder (app tests earlier in this process turn it on)."""
    from engine.commands.cli import main
    from engine.models import resolve

    out, err = io.StringIO(), io.StringIO()
    old_term = signal.getsignal(signal.SIGTERM)
    old_stdin, old_names = sys.stdin, resolve.NAMES_FROM_CHILD
    sys.stdin = io.StringIO(stdin)
    resolve.NAMES_FROM_CHILD = False
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
            except Exception:  # a traceback: what this module exists to catch
                import traceback

                traceback.print_exc(file=err)
                rc = 1
    finally:
        sys.stdin, resolve.NAMES_FROM_CHILD = old_stdin, old_names
        signal.signal(signal.SIGTERM, old_term)
    return rc, out.getvalue(), err.getvalue()


def run_process(argv: list[str], *, env: dict | None = None, fsize: int | None = None, cwd=None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    from engine.core.spawn import child_env, module_argv

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    if fsize is not None:  # a size limit would also cut the byte-code cache Python writes beside the sources
        env = {**(env or {}), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(module_argv("engine.commands.cli", *argv), capture_output=True, text=True, timeout=timeout,
                          env=child_env(env), cwd=cwd or ROOT, preexec_fn=limit if fsize else None)


def error_line(rc: int, err: str, expect: str) -> str:
    """The one error line, after checking exit 2, no traceback and nothing else said but notes."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("nibble: note: ")
             and not ln.startswith("Loading weights")
             and not re.match(r"\[\s*\d+/\d+\] |\s*[\d.]+%  ", ln)]  # progress lines
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("nibble: error: "), err
    assert expect in lines[0], (expect, lines[0])
    assert len(lines[0]) < 600, lines[0]
    return lines[0]


def _no_temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name)


# --- argument, path, file and output cases, in this process ------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_ends_in_one_line_and_changes_nothing(case, ws, monkeypatch):
    monkeypatch.setenv("NIBBLE_HOME", str(ws / "nibble-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [a.replace("{ws}", str(ws)) for a in case.argv]
    before, children = snapshot(ws), _live_children()
    rc, out, err = run_in_process(argv, case.stdin)
    try:
        error_line(rc, err, case.expect.replace("{ws}", str(ws)))
        assert changes(before, snapshot(ws)) == []
        assert _live_children() <= children
        OUTCOMES.append((case.kind, "exit 2, one line, nothing changed"))
    except AssertionError:
        OUTCOMES.append((case.kind, "FAILED"))
        raise


def test_a_sample_as_real_processes(ws):
    """Exit code and stderr of the real program, for one case of each kind."""
    seen: dict[str, object] = {}
    for case in CASES:
        if case.kind not in seen and not case.stdin and "\udcff" not in " ".join(case.argv):
            seen[case.kind] = case
    before = snapshot(ws)
    for case in seen.values():
        argv = [a.replace("{ws}", str(ws)) for a in case.argv]
        r = run_process(argv, env={"HF_HUB_OFFLINE": "1", "NIBBLE_HOME": str(ws / "nibble-home")})
        error_line(r.returncode, r.stderr, case.expect.replace("{ws}", str(ws)))
        OUTCOMES.append(("real process (" + case.kind + ")", "exit 2, one line, nothing changed"))
    assert changes(before, snapshot(ws)) == []


def test_immutable_output_is_refused_before_work(ws, tmp_path):
    """chattr +i (where the file system and user allow it): a file and a folder that cannot be written."""
    target, folder = tmp_path / "frozen.gguf", tmp_path / "frozen"
    target.write_bytes((ws / "q.gguf").read_bytes())
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(target), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        for argv, expect in [
            (["quantize", str(ws / "m"), "--type", "Q4_0", "--out", str(target)], f"--out: output path {target} cannot be replaced"),
            (["quantize", str(ws / "m"), "--type", "Q4_0", "--out", str(folder / "x.gguf")], f"cannot write in {folder}"),
            (["quantize", str(ws / "m"), "--type", "AWQ", "--out", str(folder / "awq")], f"cannot write in {folder}"),
        ]:
            rc, _, err = run_in_process(argv)
            error_line(rc, err, expect)
            OUTCOMES.append(("output that would destroy a file", "exit 2, one line, nothing changed"))
    finally:
        subprocess.run(["chattr", "-i", str(target), str(folder)])


# --- a full disk (a file-size limit), as real processes ----------------------------------------------


# File size limits as fractions of the demo's bf16 weights: half of them stops the conversion; one and a half
# lets the bf16 conversion through and stops llama.cpp's quantizer writing F32 (twice the weights).
@pytest.mark.parametrize("what, argv, weights_fraction", [
    ("conversion", ["quantize", "{ws}/m", "--type", "Q8_0", "--out", "{out}/x.gguf"], 0.5),
    ("llama.cpp's quantizer", ["quantize", "{ws}/m", "--type", "F32", "--out", "{out}/x.gguf"], 1.5),
])
def test_full_disk_is_one_line_and_leaves_nothing(what, argv, weights_fraction, ws, tmp_path):
    fsize = int(weights_fraction * (ws / "m" / "model.safetensors").stat().st_size)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(ws)
    r = run_process([a.replace("{ws}", str(ws)).replace("{out}", str(out)) for a in argv], fsize=fsize,
                    env={"HF_HUB_OFFLINE": "1"})
    error_line(r.returncode, r.stderr, f"disk full while writing {out}/x.gguf")
    assert list(out.iterdir()) == [] and changes(before, snapshot(ws)) == []
    OUTCOMES.append(("full disk", "exit 2, one line, nothing changed"))


def test_full_disk_during_awq_is_one_line_and_leaves_nothing(tmp_path):
    from tinymodels import make_model

    model = make_model(tmp_path / "tiny", "llama3", hidden=64, intermediate=128, layers=1)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(model)
    r = run_process(["quantize", str(model), "--type", "AWQ", "--out", str(out / "awq"), "--group-size", "64",
                     "--samples", "2", "--seqlen", "32"], fsize=20_000, env={"HF_HUB_OFFLINE": "1"})
    error_line(r.returncode, r.stderr, f"disk full while writing {out}/awq")
    assert list(out.iterdir()) == [] and changes(before, snapshot(model)) == []
    OUTCOMES.append(("full disk", "exit 2, one line, nothing changed"))


# --- signals at several points -------------------------------------------------------------------------


def _start_quantize(ws: Path, out: Path) -> subprocess.Popen:
    from engine.core.spawn import child_env, module_argv

    argv = module_argv("engine.commands.cli", "quantize", str(ws / "m"), "--type", "Q4_K_M", "--out", str(out / "x.gguf"),
                       "--calibration", "default", "--json-progress")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=child_env({"HF_HUB_OFFLINE": "1"}), preexec_fn=ctrl_c_reaches_it)


def _wait_for(proc: subprocess.Popen, stage: str) -> list[psutil.Process]:
    """Read progress until ``stage`` shows, then the process's children (the quantizer's worker)."""
    for line in proc.stdout:
        if json.loads(line).get("stage") == stage:
            break
    return psutil.Process(proc.pid).children(recursive=True)


def _gone(procs) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


@pytest.mark.parametrize("signals, stage", [
    ((signal.SIGINT,), "convert"),
    ((signal.SIGINT,), "imatrix"),
    ((signal.SIGTERM,), "imatrix"),
    ((signal.SIGINT, signal.SIGINT), "imatrix"),  # a second Ctrl-C while it cleans up
])
def test_signal_stops_the_worker_at_once_and_leaves_nothing(signals, stage, ws, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_quantize(ws, out)
    kids = _wait_for(proc, stage)
    for sig in signals:
        proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert rc == 2 and "Traceback" not in err and err.strip().endswith("nibble: cancelled; no output was written")
    psutil.wait_procs(kids, timeout=10)
    assert _gone(kids)
    assert list(out.iterdir()) == []
    OUTCOMES.append(("signal", "exit 2, worker gone, nothing left"))


def test_killed_run_leaves_temporaries_that_the_next_run_removes(ws, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_quantize(ws, out)
    kids = _wait_for(proc, "imatrix")
    proc.kill()
    proc.wait()
    psutil.wait_procs(kids, timeout=30)  # the worker ends with its parent
    assert _gone(kids)
    assert _no_temporaries(out)  # what SIGKILL left behind ...
    r = run_process(["quantize", str(ws / "m"), "--type", "Q8_0", "--out", str(out / "y.gguf")],
                    env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["y.gguf"]  # ... is gone after the next run
    OUTCOMES.append(("signal", "exit 2, worker gone, nothing left"))


# --- the hostile Hub -------------------------------------------------------------------------------------

_BLOB = "0" * 64


@pytest.mark.parametrize("lies, expect", [
    ({"etag": "../../../../outside/x"}, "a checksum (ETag) '../../../../outside/x'"),
    ({"etag": "not-hex"}, "a checksum (ETag) 'not-hex'"),
    ({"etag": _BLOB}, "arrived damaged (size or checksum differs)"),
    ({"commit": "../../../outside"}, "a commit id '../../../outside'"),
    ({"commit": "main"}, "a commit id 'main'"),
    ({"linked_size": "12"}, "gave two sizes"),
    ({"listed_size": 10**15}, "not enough disk space"),
    ({"body": "flip"}, "arrived damaged (size or checksum differs)"),
    ({"body": "extra"}, "sent more of"),
    ({"redirect": "loop"}, "TooManyRedirects"),
    ({"redirect": "elsewhere"}, "404"),
])
def test_hostile_hub_writes_nothing_outside_the_cache(lies, expect, hub_server, tmp_path, monkeypatch):
    weights = tiny_safetensors({"model.embed_tokens.weight": (64, 64)})
    hub_server.add_model("acme/liar", {"config.json": llama_config(), "model.safetensors": weights,
                                       "tokenizer.json": b'{"model": {"type": "BPE"}}'})
    hub_server.lie("acme/liar", **lies)
    outside = hub_server.home.parent / "outside"
    before = snapshot(hub_server.home.parent)
    rc, _, err = run_in_process(["download", "acme/liar"])
    error_line(rc, err, expect)
    assert not outside.exists()
    new = [k for k in changes(before, snapshot(hub_server.home.parent)) if not k.startswith("nibble_home")]
    assert all(k.startswith("hf_home") for k in new), new  # nothing written outside the cache ...
    blobs = [k.split("/")[-1] for k in new if "/blobs/" in k]
    assert all(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", b) for b in blobs), blobs  # ... no name it refused,
    assert not [k for k in new if k.endswith("/model.safetensors")], new  # and not the file it lied about
    OUTCOMES.append(("hostile Hub", "exit 2, one line, nothing outside the cache"))


def test_hostile_file_names_and_ids_are_refused(hub_server):
    weights = tiny_safetensors({"model.embed_tokens.weight": (64, 64)})
    index = json.dumps({"weight_map": {"model.embed_tokens.weight": "../../../outside.safetensors"}}).encode()
    hub_server.add_model("acme/names", {"config.json": llama_config(), "model.safetensors.index.json": index,
                                        "model.safetensors": weights, "../../../outside.safetensors": weights})
    for argv, expect in [(["download", "acme/names"], "a file name '../../../outside.safetensors'"),
                         (["download", "acme/names", "--gguf", "../x.gguf"], "has no file ../x.gguf"),
                         (["download", "acme/../../etc"], "is not a Hub model id"),
                         (["estimate", "acme/..x"], "is not a Hub model id")]:
        rc, _, err = run_in_process(argv)
        error_line(rc, err, expect)
        OUTCOMES.append(("hostile Hub", "exit 2, one line, nothing outside the cache"))
    assert not (hub_server.home.parent / "outside.safetensors").exists()


def test_ctrl_c_during_a_download_keeps_the_part_and_the_next_run_resumes(hub_server):
    weights = tiny_safetensors({"model.embed_tokens.weight": (1024, 1024)})  # 2 MiB: progress after the first
    hub_server.add_model("acme/slow", {"config.json": llama_config(), "model.safetensors": weights})
    hub_server.lie("acme/slow", slow=1_000_000)
    from engine.core.spawn import child_env, module_argv

    env = child_env({k: os.environ[k] for k in ("HF_ENDPOINT", "HF_HOME", "NIBBLE_HOME")})
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.Popen(module_argv("engine.commands.cli", "download", "acme/slow", "--json-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=ctrl_c_reaches_it)
    for line in proc.stdout:
        if json.loads(line).get("file") == "model.safetensors":
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 2 and "Traceback" not in proc.stderr.read()
    part = next(hub_server.cache.rglob("*.incomplete"))
    kept = part.stat().st_size
    assert 0 < kept < len(weights)
    hub_server.lie("acme/slow")  # the link is fast again
    rc, _, err = run_in_process(["download", "acme/slow"])
    assert rc == 0, err
    gets = hub_server.file_requests("model.safetensors")
    assert gets[-1]["range"] == f"bytes={kept}-"
    OUTCOMES.append(("signal", "exit 2, part kept, resumed"))


# --- repository code ---------------------------------------------------------------------------------


def test_repository_code_is_neither_run_nor_copied(tmp_path):
    """A Llama whose config names its own code loads with transformers' code (one note); AWQ's output holds
    neither the code nor the auto_map that would make a later trust_remote_code load run it."""
    from tinymodels import make_model

    model = make_model(tmp_path / "code-model", "llama3", hidden=64, intermediate=128, layers=1)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "code-ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    rc, out, err = run_in_process(["quantize", str(model), "--type", "AWQ", "--out", str(tmp_path / "awq"),
                                   "--group-size", "64", "--samples", "2", "--seqlen", "32"])
    assert rc == 0, err[-2000:]
    notes = [ln for ln in err.splitlines() if ln.startswith("nibble: note: ")]
    assert len(notes) == 1 and "modeling_evil.py" in notes[0] and "never runs or copies" in notes[0]
    assert not marker.exists()
    awq = tmp_path / "awq"
    assert not list(awq.glob("*.py")) and "auto_map" not in (awq / "config.json").read_text()
    from transformers import AutoConfig

    AutoConfig.from_pretrained(str(awq), trust_remote_code=True)  # what a later loader may do: nothing to run
    assert not marker.exists()
    OUTCOMES.append(("repository code", "loaded natively, one note, no code copied"))


# --- the table in benchmarks/RESULTS.md ---------------------------------------------------------------

_BEGIN, _END = "<!-- reliability table: begin -->", "<!-- reliability table: end -->"


def write_results_table(path: Path) -> None:
    kinds = Counter(k for k, _ in OUTCOMES)
    rows = ["| kind | cases | outcome |", "|---|---:|---|"]
    for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        outcomes = Counter(o for k, o in OUTCOMES if k == kind)
        rows.append(f"| {kind} | {n} | " + "; ".join(f"{o} ({c})" for o, c in outcomes.most_common()) + " |")
    failed = sum(1 for _, o in OUTCOMES if o == "FAILED")
    rows.append(f"| **all** | **{len(OUTCOMES)}** | {len(OUTCOMES) - failed} as required, {failed} failed |")
    table = "\n".join(rows)
    text = path.read_text(encoding="utf-8")
    if _BEGIN in text:
        head, rest = text.split(_BEGIN, 1)
        text = head + _BEGIN + "\n" + table + "\n" + _END + rest.split(_END, 1)[1]
    else:
        text += f"\n{_BEGIN}\n{table}\n{_END}\n"
    path.write_text(text, encoding="utf-8")
