"""The layering: the library (everything under handgrad/ outside app/) never imports handgrad.app;
the old names of the moved modules still import, as the modules at their new place."""

import ast
import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import handgrad

PACKAGE = Path(handgrad.__file__).parent
# The entry point of ``python -m handgrad`` runs the command line: it is the application's door.
ENTRY_POINT = PACKAGE / "__main__.py"


def library_files() -> list:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if "app" not in p.relative_to(PACKAGE).parts[:1] and p != ENTRY_POINT
    )


def module_name(path: Path) -> str:
    parts = ("handgrad",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_imports(path: Path) -> list:
    """Each import in ``path`` that reaches handgrad.app, as ``line: module``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                if node.level
                else node.module
            )
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"{node.lineno}: {t}" for t in targets if t == "handgrad.app" or t.startswith("handgrad.app.")]
    return found


def test_the_scan_sees_the_library_and_an_import_of_the_app(tmp_path):
    names = {module_name(p) for p in library_files()}
    assert {"handgrad", "handgrad.models", "handgrad.nn.linear", "handgrad.functional.conv"} <= names
    assert not any(n.startswith("handgrad.app") for n in names)
    # The scan must catch each way of spelling the import: tried on a file placed in the package.
    probe = PACKAGE / "nn" / "_probe_imports.py"
    probe.write_text("import handgrad.app.cli\nfrom ..app import training\nfrom .. import app\n")
    try:
        assert [line.split(": ")[0] for line in app_imports(probe)] == ["1", "2", "2", "3"]
    finally:
        probe.unlink()


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_library_module_imports_the_app(path):
    assert app_imports(path) == [], f"{path.relative_to(PACKAGE)} imports handgrad.app"


def test_importing_every_library_module_loads_nothing_of_the_app():
    names = [module_name(p) for p in library_files()]
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as e:\n"
        "        if e.name not in ('torch', 'onnx', 'onnxruntime', 'safetensors'): raise\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('handgrad.app'))))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent)] + sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("old", ["cli", "training", "explain"])
def test_an_old_name_gives_the_module_at_its_new_place_with_a_deprecation(old):
    new = importlib.import_module(f"handgrad.app.{old}")
    sys.modules.pop(f"handgrad.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"handgrad\.{old} has moved to handgrad\.app\.{old}"):
        module = importlib.import_module(f"handgrad.{old}")
    assert module is new
    assert getattr(handgrad, old) is new
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert importlib.import_module(f"handgrad.{old}") is new  # once imported, no second warning


def test_python_dash_m_handgrad_runs_the_command_line():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent)] + sys.path))
    out = subprocess.run([sys.executable, "-m", "handgrad", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.startswith("usage: handgrad")
