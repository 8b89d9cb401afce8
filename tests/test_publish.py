"""Publishing to the Hub (against the stand-in Hub on 127.0.0.1), splitting GGUF files, and handing files to
Ollama and LM Studio."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from clitools import one_error_line
from hubwrite import fail_uploads, write_token

from engine.commands.cli import main


@pytest.fixture(scope="module")
def demo_ggufs(tmp_path_factory):
    """The demo model at Q4_K_M and Q8_0, and an evaluation of the first against the original."""
    from engine.analysis.evaluate import evaluate
    from engine.gguf.quantize import quantize

    folder = tmp_path_factory.mktemp("ggufs")
    q4 = quantize("demo", "Q4_K_M", folder / "demo-Q4_K_M.gguf").output
    q8 = quantize("demo", "Q8_0", folder / "demo-Q8_0.gguf").output
    result = evaluate("demo", q4, max_chunks=2, ctx=128)
    return q4, q8, result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _agrees_to_the_digits_shown(shown: str, value: float) -> bool:
    """A figure printed as ``0.0014`` or ``3.21e-04`` is the measured one rounded to its last digit."""
    mantissa, _, exponent = shown.partition("e")
    decimals = len(mantissa.partition(".")[2])
    last_digit = 10.0 ** (int(exponent or 0) - decimals)
    return abs(float(shown) - value) <= last_digit / 2 * (1 + 1e-9)


def _one_error(code: int, err: str) -> str:
    """The error line of a command refused before any work, held to what every CLI error promises
    (tests/clitools.py): exit 2 and nothing on stderr but that one line."""
    return one_error_line(subprocess.CompletedProcess(["nibble"], code, "", err))


def _error_after_progress(code: int, err: str) -> str:
    """The error line of a command that failed part way: the progress lines it printed, then one error
    line, the last, and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("nibble: error:")]
    assert code == 2 and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert "Traceback" not in err, err
    return errors[0]


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def hub(hub_server, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks the LFS protocol
    write_token(hub_server, "hf_alice_write", "alice", orgs=("team",))
    hub_server.add_token("hf_alice_read", "alice")
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    return hub_server


def _recorded(q4, result):
    from engine.pipelines.record import record_evaluation, record_quantized

    record_quantized("demo", q4, kind="gguf", type_name="Q4_K_M")
    record_evaluation("demo", q4, result, "eval-text.txt")


def test_publish_creates_the_repository_with_files_and_a_card(hub, demo_ggufs):
    import llama_cpp

    q4, _q8, result = demo_ggufs
    _recorded(q4, result)
    before = _sha(q4)
    code, out, err = _cli("publish", q4, "--repo", "alice/demo-gguf", "--base", "acme/demo-base")
    assert code == 0, err
    assert "created" in out and "alice/demo-gguf" in out
    repo = hub.repos["alice/demo-gguf"]
    assert sorted(repo.files) == ["README.md", q4.name]
    assert repo.files[q4.name] == q4.read_bytes() and _sha(q4) == before
    assert not repo.private
    card = repo.files["README.md"].decode()
    header = card.split("\n---\n", 1)[0]
    assert "base_model:\n- acme/demo-base" in header and "base_model_relation: quantized" in header
    assert "quantized_by: Nibble" in header and "- gguf" in header
    # size and bits per weight as llama.cpp itself reports them
    model = llama_cpp.Llama(str(q4), n_ctx=32, verbose=False)
    bpw = 8 * model._model.size() / model._model.n_params()
    from engine.core.units import human_bytes

    assert f"| {q4.name} | GGUF | Q4_K_M | {human_bytes(q4.stat().st_size)} | {bpw:.2f} |" in card
    row = next(line for line in card.splitlines() if line.startswith(f"| {q4.name} | ") and "%" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert _agrees_to_the_digits_shown(cells[1], result.kld_mean), (cells[1], result.kld_mean)
    assert _agrees_to_the_digits_shown(cells[2], result.kld_p99), (cells[2], result.kld_p99)
    assert float(cells[3].rstrip(" %")) == pytest.approx(100 * result.top1_agreement, abs=0.05)
    assert float(cells[4]) == pytest.approx(result.ppl_reference, abs=5e-4)
    assert float(cells[5]) == pytest.approx(result.ppl_candidate, abs=5e-4)
    assert "1,024 tokens" in card  # the demo's trained context, the only one it can run at
    assert f"nibble quantize acme/demo-base --type Q4_K_M --out {q4.name}" in card
    assert [r for r in hub.requests if r["path"].startswith("/lfs-upload/")], "the GGUF went through LFS"


def test_update_private_and_gated(hub, demo_ggufs):
    q4, q8, _ = demo_ggufs
    assert _cli("publish", q4, "--repo", "team/demo", "--private", "--gated")[0] == 0
    repo = hub.repos["team/demo"]
    assert repo.private and repo.gated
    puts = len([r for r in hub.requests if r["path"].startswith("/lfs-upload/")])
    code, out, err = _cli("publish", q4, q8, "--repo", "team/demo")
    assert code == 0 and "updated" in out, err
    assert sorted(repo.files) == sorted(["README.md", q4.name, q8.name])
    new_puts = [r for r in hub.requests if r["path"].startswith("/lfs-upload/")][puts:]
    assert len(new_puts) == 1, "the unchanged Q4_K_M file is not sent again"


def test_an_interrupted_upload_resumes_without_sending_again(hub, demo_ggufs):
    q4, q8, _ = demo_ggufs
    sums = (_sha(q4), _sha(q8))
    fail_uploads(hub, 1)
    code, _, err = _cli("publish", q4, q8, "--repo", "alice/resume")
    assert "alice/resume" in _error_after_progress(code, err)
    assert (_sha(q4), _sha(q8)) == sums
    assert not [f for f in hub.repos["alice/resume"].files if f.endswith(".gguf")], "no commit was made"
    stored_before = set(hub.lfs_objects)
    code, _, err = _cli("publish", q4, q8, "--repo", "alice/resume")
    assert code == 0, err
    assert hub.repos["alice/resume"].files[q8.name] == q8.read_bytes()
    for oid in stored_before:  # what arrived before the break is not uploaded again
        assert len([r for r in hub.requests if r["path"] == f"/lfs-upload/{oid}"]) == 1


@pytest.mark.parametrize("repo,token,expect", [
    ("bob/theirs", "hf_alice_write", "belongs to 'bob', not to alice"),
    ("alice/x", "hf_alice_read", "read-only"),
    ("alice/x", "hf_wrong", "status 401"),
    ("alice/x", "", "needs your Hugging Face token"),
    ("not a repo", "hf_alice_write", "is not a Hub model name"),
])
def test_refusals_are_one_line_and_send_nothing(hub, demo_ggufs, monkeypatch, repo, token, expect):
    q4 = demo_ggufs[0]
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN")
    code, _, err = _cli("publish", q4, "--repo", repo)
    assert expect in _one_error(code, err)
    assert not [r for r in hub.requests if r["method"] in ("POST", "PUT")]


def test_network_errors_are_one_line(hub, demo_ggufs):
    q4 = demo_ggufs[0]
    hub.close()
    code, _, err = _cli("publish", q4, "--repo", "alice/x")
    assert "cannot reach" in _one_error(code, err)


def test_a_file_over_the_split_size_is_split_and_loads(hub, demo_ggufs, tmp_path):
    import llama_cpp

    q4 = demo_ggufs[0]
    code, _, err = _cli("publish", q4, "--repo", "alice/split", "--split-size", "500KB")
    assert code == 0, err
    repo = hub.repos["alice/split"]
    parts = sorted(f for f in repo.files if f.endswith(".gguf"))
    n = len(parts)
    assert n >= -(-q4.stat().st_size // 500_000) >= 3
    assert parts == [f"demo-Q4_K_M-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert all(len(repo.files[p]) <= 550_000 for p in parts)
    assert f"(+{n - 1} parts)" in repo.files["README.md"].decode()
    assert not list(q4.parent.glob(".nibble-publish-*")), "the temporary parts are removed"
    for p in parts:
        (tmp_path / p).write_bytes(repo.files[p])

    def logits(path):
        m = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False)
        ids = m.tokenize(b"What is 2 plus 3?")
        m.eval(ids)
        return np.array(m.scores[: len(ids)])

    assert np.array_equal(logits(tmp_path / parts[0]), logits(q4))


def test_bad_split_size_and_missing_output(tmp_path):
    code, _, err = _cli("publish", tmp_path / "none.gguf", "--repo", "alice/x", "--split-size", "lots")
    assert "--split-size 'lots' is not a size" in _one_error(code, err)
    code, _, err = _cli("publish", tmp_path / "none.gguf", "--repo", "alice/x")
    assert "none.gguf: no such file" in _one_error(code, err)


# ------------------------------------------------------------------------------------------------ Ollama


def test_ollama_modelfile_translates_the_chat_template(demo_ggufs, tmp_path, monkeypatch):
    q4 = demo_ggufs[0]
    monkeypatch.setenv("PATH", str(tmp_path))  # no ollama here
    code, out, err = _cli("export", q4, "--to", "ollama")
    assert code == 0, err
    modelfile = q4.with_name("demo-Q4_K_M.Modelfile")
    assert "ChatML" in out and "Ollama is not installed" in out and str(modelfile) in out
    text = modelfile.read_text()
    assert text.splitlines()[0] == f"FROM {q4}"
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n' in text
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_ollama_create_runs_when_installed(demo_ggufs, tmp_path, monkeypatch):
    q4 = demo_ggufs[0]
    log = tmp_path / "args.txt"
    fake = tmp_path / "ollama"
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'w').write(' '.join(sys.argv[1:]))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    code, out, err = _cli("export", q4, "--to", "ollama", "--name", "demo-q4")
    assert code == 0 and "created the Ollama model demo-q4" in out, err
    assert log.read_text() == f"create demo-q4 -f {q4.with_name('demo-Q4_K_M.Modelfile')}"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('Error: invalid model', file=sys.stderr)\nsys.exit(1)\n")
    code, _, err = _cli("export", q4, "--to", "ollama", "--name", "demo-q4")
    assert "ollama create demo-q4 failed (Error: invalid model)" in _one_error(code, err)
    code, _, err = _cli("export", q4, "--to", "ollama", "--name", "Bad Name!")
    assert "is not a name Ollama accepts" in _one_error(code, err)


# ------------------------------------------------------------------------------------------------ LM Studio


def test_lmstudio_places_the_file_in_its_layout(demo_ggufs, tmp_path):
    q4, q8, _ = demo_ggufs
    models = tmp_path / "lms"
    code, out, err = _cli("export", q4, "--to", "lmstudio", "--models-dir", models)
    assert code == 0, err
    dest = models / "nibble" / "demo" / q4.name
    assert dest.is_file() and dest.read_bytes() == q4.read_bytes() and "nibble/demo" in out
    assert q4.is_file(), "the original stays where it was"
    code, out, _ = _cli("export", q4, "--to", "lmstudio", "--models-dir", models)
    assert code == 0 and "already has this file" in out
    other = models / "nibble" / "demo" / q8.name
    other.write_bytes(b"something else")
    code, _, err = _cli("export", q8, "--to", "lmstudio", "--models-dir", models)
    assert "already exists with other contents" in _one_error(code, err)
    assert other.read_bytes() == b"something else"
