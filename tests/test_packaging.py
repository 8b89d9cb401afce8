"""Packaging: build facts, the self-test, `--version`, the PyInstaller spec and the desktop entry."""

from __future__ import annotations

import configparser
import re
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest

from clitools import one_error_line

ROOT = Path(__file__).resolve().parent.parent


def nibble(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def selftest_model(tmp_path_factory):
    from tinymodels import make_model

    return make_model(tmp_path_factory.mktemp("selftest") / "tiny", hidden=128, intermediate=256)


def _installed_version(dist: str) -> str:
    """A distribution's version from its METADATA file on sys.path, read here rather than through
    importlib.metadata, which is what build_info itself asks."""
    for folder in map(Path, sys.path):
        for meta in folder.glob(f"{dist}-*.dist-info/METADATA"):
            for line in meta.read_text(encoding="utf-8").splitlines():
                if line.startswith("Version: "):
                    return line[len("Version: "):].strip()
    raise AssertionError(f"{dist} is not installed")


def _project_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_build_info_reports_the_installed_versions_and_backends():
    import llama_cpp
    import PySide6
    import torch
    import transformers

    from engine.core.buildinfo import build_info, format_build_info

    info = build_info()
    assert info["nibble"] == _project_version()
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["llama_cpp_python"] == llama_cpp.__version__
    assert info["torch"] == torch.__version__
    assert info["transformers"] == transformers.__version__
    assert info["pyside6"] == PySide6.__version__
    assert info["gguf"] == _installed_version("gguf")
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["ggml"])
    assert "CPU" in info["llama_backends"]
    assert info["torch_cuda"] == torch.cuda.is_available()
    assert info["gpu_offload"] == bool(llama_cpp.llama_supports_gpu_offload())
    text = "\n".join(format_build_info(info))
    assert f"Nibble {_project_version()}" in text and f"llama-cpp-python {llama_cpp.__version__}" in text
    assert f"torch {torch.__version__}" in text and f"PySide6) {PySide6.__version__}" in text


def test_build_info_reads_qt_version_without_loading_qt():
    import PySide6

    code = ("import sys, engine.core.buildinfo as a; i = a.build_info(load_torch=False); "
            "print(i['pyside6'], any(m.startswith('PySide6') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    version, loaded = out.stdout.split()
    assert version == PySide6.__version__
    assert loaded == "False"


def test_backends_are_read_from_the_libraries_a_gpu_build_ships(tmp_path):
    from engine.core.llama import backends_from_files

    for name in ("libggml-base.so", "libggml-cpu.so.0", "libggml-cuda.so", "libggml-cuda.so.0", "libllama.so",
                 "ggml-vulkan.dll"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(backends_from_files(tmp_path)) == ["CPU", "CUDA", "Vulkan"]
    assert backends_from_files(tmp_path / "missing") == []


def test_version_names_nibble_and_llama_cpp():
    import llama_cpp

    res = nibble("--version")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"Nibble {_project_version()}"
    llama = llama_cpp.__version__
    assert any(line.startswith(f"llama.cpp: llama-cpp-python {llama} (ggml ") for line in lines)
    assert any(line.startswith("llama.cpp backends: CPU") for line in lines)


def test_selftest_quantizes_loads_and_generates(selftest_model):
    res = nibble("selftest", "--model", str(selftest_model), "--tokens", "5", "--threads", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert out.splitlines()[-1].startswith("PASS")
    assert "Q8_0 tensors" in out and "llama-cpp-python" in out
    tokens = re.search(r"tokens \[([\d, ]+)\]", out).group(1).split(", ")
    assert len(tokens) == 5


def test_selftest_fails_on_a_broken_model(selftest_model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in selftest_model.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".safetensors" else data)
    res = nibble("selftest", "--model", str(broken), "--tokens", "2")
    assert res.returncode == 1
    assert res.stdout.splitlines()[-1].startswith("FAIL")
    assert "PASS" not in res.stdout


def test_selftest_names_a_missing_model():
    res = nibble("selftest", "--model", str(ROOT / "no-such-model"))
    one_error_line(res, str(ROOT / "no-such-model"))


def test_frozen_program_runs_engine_workers_with_dash_m(monkeypatch, capsys):
    from app import launcher

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "argv", ["nibble"])
    assert launcher.main(["-m", "engine", "selftest", "--help"]) == 0
    assert "Q8_0" in capsys.readouterr().out
    assert launcher.main(["-m", "os", "--help"]) == 2
    assert "only Nibble's own engine modules" in capsys.readouterr().err


def _run_spec():
    """Execute packaging/nibble.spec with PyInstaller's build classes recorded instead of run."""
    calls: dict[str, tuple] = {}

    collected = [  # what PyInstaller's torch and Qt hooks collect, as (destination, source, kind)
        ("torch/lib/libtorch_cpu.so", "/x", "BINARY"), ("torch/bin/torch_shm_manager", "/x", "BINARY"),
        ("torch/bin/test_jit", "/x", "BINARY"), ("torch/test/Dict_test", "/x", "BINARY"),
        ("PySide6/Qt/lib/libQt6Widgets.so.6", "/x", "BINARY"), ("PySide6/Qt/lib/libQt6Quick.so.6", "/x", "BINARY"),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", "/x", "BINARY"),
        ("PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so", "/x", "BINARY"),
    ]

    def recorder(name):
        def record(*args, **kwargs):
            calls[name] = (args, kwargs)
            return types.SimpleNamespace(pure=[], scripts=[], binaries=list(collected), datas=[])
        return record

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda pkg, filter=None: [pkg]
    hooks.copy_metadata = lambda name: [(f"{name}.dist-info", f"{name}.dist-info")]
    fake = {"PyInstaller": types.ModuleType("PyInstaller"), "PyInstaller.utils": types.ModuleType("PyInstaller.utils"),
            "PyInstaller.utils.hooks": hooks}
    spec = ROOT / "packaging" / "nibble.spec"
    ns = {"SPECPATH": str(spec.parent), "__file__": str(spec), "__name__": "__main__"}
    ns.update({n: recorder(n) for n in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")})
    saved_modules, saved_path = {k: sys.modules.get(k) for k in fake}, list(sys.path)
    sys.modules.update(fake)
    try:
        exec(compile(spec.read_text(), str(spec), "exec"), ns)
    finally:
        sys.path[:] = saved_path
        for k, v in saved_modules.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return calls


def test_spec_bundles_resources_llama_libraries_and_the_entry_point():
    calls = _run_spec()
    args, kw = calls["Analysis"]
    entry = Path(args[0][0])
    assert entry.is_file() and "app.launcher" in entry.read_text()
    assert (str(ROOT / "resources"), "resources") in kw["datas"]
    libs = {Path(src).name: dest for src, dest in kw["binaries"]}
    assert libs["libllama.so"] == "llama_cpp/lib" and libs["libggml.so.0"] == "llama_cpp/lib"
    assert not any(re.search(r"\.so\.\d+\.\d+", name) for name in libs)  # one copy of each library
    for module in ("engine", "app", "tokenizers", "sentencepiece", "gguf"):
        assert module in kw["hiddenimports"]
    assert "PySide6.QtWebEngineCore" in kw["excludes"] and "torch.testing._internal" in kw["excludes"]
    assert calls["EXE"][1]["name"] == "nibble" and calls["COLLECT"][1]["name"] == "nibble"
    bundled = [dest for dest, _, _ in calls["COLLECT"][0][1]]
    assert bundled == ["torch/lib/libtorch_cpu.so", "torch/bin/torch_shm_manager", "PySide6/Qt/lib/libQt6Widgets.so.6",
                       "PySide6/Qt/plugins/platforms/libqxcb.so"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_desktop_entry_and_icons():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "resources" / "nibble.desktop", encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Nibble"
    assert entry["Exec"].split()[0] == "nibble"
    assert entry["Icon"] == "nibble"
    assert entry["Categories"].endswith(";") and "Science" in entry["Categories"].split(";")
    icons = ROOT / "resources" / "icons"
    assert "<svg" in (icons / "nibble.svg").read_text()
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        assert _png_size(icons / "png" / f"nibble-{size}.png") == (size, size)
    assert (icons / "nibble.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"
    assert (icons / "nibble.icns").read_bytes()[:4] == b"icns"
