"""The house rules, checked over the real import graph (imports inside functions included):

- engine/ never imports Qt, pyqtgraph or the app, and the whole engine imports where Qt cannot;
- engine's packages stand in layers, each importing only its own layer or the ones below;
- no import cycle between modules of engine/ or app/;
- app/views/ reach the engine only through app/services/ (or other app modules), and nothing in app/ looks
  an engine module up by a name string (app/launcher.py's ``-m`` runner for frozen builds aside).
"""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6", "app")

# Top to bottom. A module may import from its own layer or any layer below it, never above.
LAYERS = [
    {"commands", "pipelines", "__main__"},
    {"analysis", "runtime", "estimate"},
    {"gguf", "awq", "hub"},
    {"models"},
    {"core"},
]


def _imports(path: pathlib.Path):
    """(module imported, line) for every import in ``path``, wherever it stands, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for alias in node.names:  # ``from engine.x import y`` may import the submodule engine.x.y
                yield f"{mod}.{alias.name}", node.lineno
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.args[0].value, node.lineno


def _modules(top: str) -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _graph(top: str) -> dict[str, set[str]]:
    mods = _modules(top)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for name, _ in _imports(path):
            if name in mods and name != mod:
                graph[mod].add(name)
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # engine/__init__.py
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    return None


def test_engine_never_imports_qt_or_app():
    offenders = []
    files = sorted((ROOT / "engine").rglob("*.py"))
    assert files, "engine/ has no Python files"
    for path in files:
        for name, line in _imports(path):
            if name.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, "engine/ must stay headless:\n" + "\n".join(offenders)


def test_every_engine_module_belongs_to_a_layer():
    loose = [m for m in _modules("engine") if m.count(".") >= 1 and _layer(m) is None]
    assert not loose, f"engine modules outside the layers {LAYERS}: {loose}"


def test_engine_layers_only_import_downward():
    offenders = []
    for mod, path in _modules("engine").items():
        mine = _layer(mod)
        if mine is None:
            continue
        for name, line in _imports(path):
            theirs = _layer(name) if name.startswith("engine.") else None
            if theirs is not None and theirs < mine:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name} from a layer above")
    assert not offenders, "\n".join(offenders)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph_without_packages(top: str) -> dict[str, set[str]]:
    """The import graph with a package's ``__init__`` re-exports left out: ``a.b`` importing ``a`` (its
    parent package) to reach a sibling is not a cycle of modules."""
    graph = _graph(top)
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles_in_engine_or_app():
    for top in ("engine", "app"):
        cycles = _cycles(_graph_without_packages(top))
        assert not cycles, f"import cycles in {top}/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The rules above would catch a real offence: a cycle through a function-level import."""
    graph = {"engine.a": {"engine.b"}, "engine.b": {"engine.a"}, "engine.c": set()}
    assert _cycles(graph) == [["engine.a", "engine.b"]]
    assert _layer("engine.core.errors") > _layer("engine.models.source") > _layer("engine.gguf.convert")
    assert _layer("engine.gguf.convert") > _layer("engine.runtime.base") > _layer("engine.commands.cli")


def test_engine_cli_runs_without_qt(tmp_path):
    """The whole engine imports in a process where Qt cannot be imported at all."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6'):\n"
        "            raise ImportError('Qt is blocked in this test')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "import pkgutil, importlib, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "from engine.commands.cli import main\n"
        "raise SystemExit(main(['--help']))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "nibble" in out.stdout


def test_the_command_line_starts_without_the_heavy_libraries():
    """``nibble --help`` and every command's option parsing load none of numpy, torch, transformers, the Hub
    client or llama.cpp: a command imports what its work needs once its options are read, so a mistyped
    option is answered at once and no command waits for another's libraries."""
    heavy = ("numpy", "torch", "transformers", "huggingface_hub", "llama_cpp", "safetensors", "gguf")
    code = (
        "import sys\n"
        "from engine.commands.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "for cmd in parser._subparsers._group_actions[0].choices.values():\n"
        "    cmd.format_help()\n"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported while parsing options: {out.stdout.strip()}"


# Calls that find a module by a string: what the app must not do to reach the engine.
_NAME_LOOKUPS = ("import_module", "__import__", "run_module", "find_spec")


def _name_lookups(source: str) -> list[int]:
    """Lines of ``source`` that look a module up by a name string (importlib, __import__, runpy)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in _NAME_LOOKUPS:
            lines.append(node.lineno)
    return lines


def _engine_imports(path: pathlib.Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}" for name, line in _imports(path)
            if name == "engine" or name.startswith("engine.")]


def test_views_reach_the_engine_only_through_app_services():
    views = sorted((ROOT / "app" / "views").rglob("*.py"))
    assert views, "app/views/ has no Python files"
    offenders = [hit for path in views for hit in _engine_imports(path)]
    assert not offenders, "views import the engine through app/services/:\n" + "\n".join(offenders)
    services = sorted((ROOT / "app" / "services").glob("*.py"))
    assert services and all(_engine_imports(path) for path in services), \
        "app/services/ is where the views' engine calls live"


def test_the_app_never_looks_up_engine_modules_by_name():
    offenders = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        if path == ROOT / "app" / "launcher.py":  # runs ``nibble -m engine.<module>`` in a frozen build
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}" for line in _name_lookups(path.read_text(encoding="utf-8"))]
    assert not offenders, "import engine modules by name, not by string lookup:\n" + "\n".join(offenders)


def test_the_name_lookup_check_sees_an_offence():
    """The rule above would catch a string lookup (the view rule is seen working on app/services/)."""
    assert _name_lookups("import importlib\nfn = getattr(importlib.import_module('engine.estimate'), 'estimate')\n") == [2]
    assert _name_lookups("mod = __import__('engine.hub')\n") == [1]
    assert _name_lookups("from engine.estimate import estimate\n") == []
