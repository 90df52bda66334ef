"""The architecture, enforced: one-way layers, size limits, a torch-free command line, the console script.

Layers (docs/ARCHITECTURE.md): ``stemdb`` <- ``augment`` <- ``train`` <- ``pipelines``. A module may import its own
layer and the layers below it, never one above, anywhere in the file (function-level imports and
``importlib.import_module("...")`` with a literal name included). ``stemdb`` imports neither torch nor prefect;
``augment`` neither torch nor prefect; ``train`` not prefect.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS: dict[str, int] = {"stemdb": 0, "augment": 1, "train": 2, "pipelines": 3}
#: Third-party packages a layer must not import (its own dependencies stay light).
BANNED: dict[str, frozenset[str]] = {
    "stemdb": frozenset({"torch", "prefect", "prefect_dask", "dask", "distributed"}),
    "augment": frozenset({"torch", "prefect", "prefect_dask", "dask", "distributed"}),
    "train": frozenset({"prefect", "prefect_dask"}),
    "pipelines": frozenset(),
}
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


# --------------------------------------------------------------------------------------------------------------
# the checker


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in a module, at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module or ""
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            yield node.lineno, node.args[0].value


def _is_dynamic_import(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
        (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def layer_violations(root: Path) -> list[str]:
    """``"<file>:<line>: <layer> imports <module>"`` for every upward or banned import under ``root``."""
    found = []
    for layer, rank in LAYERS.items():
        for path in sorted((root / layer).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            mod = module_name(root, path)
            for line, name in imported_names(tree, mod, path.name == "__init__.py"):
                top = name.split(".")[0]
                if LAYERS.get(top, -1) > rank or top in BANNED[layer]:
                    found.append(f"{path.relative_to(root)}:{line}: {layer} imports {name}")
    return found


def sizes(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, file) of every library file and (lines, "file:line name") of every function, largest first; a
    function's lines run from its first decorator to its last line (docstring included)."""
    files, funcs = [], []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            text = path.read_text()
            rel = str(path.relative_to(root))
            files.append((len(text.splitlines()), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    funcs.append((node.end_lineno - first + 1, f"{rel}:{node.lineno} {node.name}"))
    return sorted(files, reverse=True), sorted(funcs, reverse=True)


# --------------------------------------------------------------------------------------------------------------
# the rules hold on the code


def test_layers_import_only_downwards() -> None:
    violations = layer_violations(ROOT)
    assert not violations, "imports against the layer order stemdb <- augment <- train <- pipelines:\n" + \
        "\n".join(violations)


def test_a_planted_upward_import_is_caught_with_its_file_and_line(tmp_path: Path) -> None:
    """The checker on a copy of the tree with one upward import planted inside a function (and one relative
    import of the package's own module, which is fine)."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "stemdb" / "levels.py").write_text(textwrap.dedent("""\
        from . import atomic


        def window_lufs():
            from train.models import build_model
            return build_model
        """))
    (tmp_path / "augment" / "remix.py").write_text("import importlib\nimportlib.import_module('pipelines.flows')\n")
    (tmp_path / "augment" / "render.py").write_text("from stemdb import audio\nimport torch\n")
    assert layer_violations(tmp_path) == [
        "stemdb/levels.py:5: stemdb imports train.models",
        "augment/remix.py:2: augment imports pipelines.flows",
        "augment/render.py:2: augment imports torch",
    ]


def test_model_registry_points_into_train() -> None:
    from train.models import MODELS

    assert MODELS and all(module.startswith("train.models.") for module, _cls in MODELS.values()), MODELS


def test_no_library_file_or_function_is_too_long() -> None:
    files, funcs = sizes(ROOT)
    print(f"largest file: {files[0][1]} ({files[0][0]} lines); largest function: {funcs[0][1]} ({funcs[0][0]} lines)")
    long_files = [f"{f} ({n} lines)" for n, f in files if n > MAX_FILE_LINES]
    long_funcs = [f"{f} ({n} lines)" for n, f in funcs if n > MAX_FUNCTION_LINES]
    assert not long_files, f"library files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_funcs, f"functions over {MAX_FUNCTION_LINES} lines: {long_funcs}"


def test_the_size_check_counts_decorators_and_docstrings(tmp_path: Path) -> None:
    (tmp_path / "stemdb").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(57))
    (tmp_path / "stemdb" / "a.py").write_text(f'@decorator\ndef f():\n    """doc"""\n{body}\n')
    _files, funcs = sizes(tmp_path)
    assert funcs == [(60, "stemdb/a.py:2 f")]


# --------------------------------------------------------------------------------------------------------------
# the command line


def _run_cli(*args: str) -> tuple[int, str, list[str]]:
    """Run the stemdb command line in a fresh interpreter; (exit code, output, heavy modules it imported)."""
    code = textwrap.dedent(f"""\
        import sys
        from typer.testing import CliRunner
        from pipelines.cli import app
        r = CliRunner().invoke(app, {list(args)!r})
        print(r.output)
        heavy = sorted(m for m in ("torch", "prefect", "train.models") if m in sys.modules)
        print("HEAVY=" + ",".join(heavy))
        sys.exit(r.exit_code)
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    heavy = r.stdout.rsplit("HEAVY=", 1)[-1].strip()
    return r.returncode, r.stdout + r.stderr, [h for h in heavy.split(",") if h]


def test_help_and_catalog_summary_import_no_torch(fixture_catalog: Path) -> None:
    code, out, heavy = _run_cli("--help")
    assert code == 0 and all(c in out for c in ("ingest", "catalog", "remix", "report", "train", "evaluate-run"))
    assert heavy == [], heavy
    code, out, heavy = _run_cli("catalog", "summary", "--catalog", str(fixture_catalog))
    assert code == 0 and "by kind:" in out, out
    assert heavy == [], heavy


def test_the_torch_check_sees_a_command_that_imports_torch(tmp_path: Path) -> None:
    """The same probe on a command that needs torch reports it (the check above can fail)."""
    _code, _out, heavy = _run_cli("separate", str(tmp_path / "none.wav"), "--model", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "o"))
    assert "torch" in heavy


def test_console_script_is_the_pipelines_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"stemdb": "pipelines.cli:main"}
    r = subprocess.run([sys.executable, "-m", "pipelines", "--help"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0 and all(c in r.stdout for c in ("ingest", "remix", "train", "serve")), r.stdout


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_imports_alone(name: str) -> None:
    """Importing a layer's modules pulls in no higher layer (a cheap runtime check of the static one)."""
    modules = sorted(module_name(ROOT, p) for p in (ROOT / name).rglob("*.py") if p.name != "__main__.py")
    code = textwrap.dedent(f"""\
        import importlib, sys
        for m in {modules!r}:
            importlib.import_module(m)
        higher = {[k for k, v in LAYERS.items() if v > LAYERS[name]]!r}
        print(sorted(m for m in sys.modules if m.split(".")[0] in higher))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
