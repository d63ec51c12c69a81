"""The package's layers: pure layers import no Dagster, and no layer imports one above it.

Every ``import`` in a module counts, also one inside a function: a lazy import still couples the layers.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calmops_dagster"

#: What each layer may import of this package, besides itself and the shared top-level modules.
ALLOWED = {
    "drift": set(),
    "estimation": set(),
    "store": set(),
    "learning": {"drift"},
    "ingest": {"store"},
    "orchestration": {"drift", "estimation", "learning", "ingest", "store"},
    "interfaces": {"drift", "estimation", "learning", "ingest", "store", "orchestration"},
}
PURE = ("drift", "estimation", "learning", "ingest", "store")
#: Top-level modules every layer may use: the spec and the typed errors.
SHARED = {"spec", "errors"}
#: The top-level folders installed as calmops_dagster.<name>: Dagster wiring and data generators.
WIRING = ("assets", "sensors", "resources", "generators")
TOP_LEVEL = {"__init__", "definitions", "spec", "errors", "ipip", "river_models"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "calmops_dagster":  # from calmops_dagster import circuit_breaker
                names.update(f"calmops_dagster.{alias.name}" for alias in node.names)
    return names


def layer_modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_layer_imports_only_layers_below(layer):
    offences = []
    for path in layer_modules(layer):
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "dagster" or parts[0].startswith("dagster_"):
                if layer in PURE:
                    offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
            elif parts[0] == "calmops_dagster" and len(parts) > 1 and parts[1] in WIRING:
                if layer not in ("orchestration", "interfaces"):
                    offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
            elif parts[0] == "calmops_dagster" and len(parts) > 1:
                target = parts[1]
                if target != layer and target not in SHARED and target not in ALLOWED[layer]:
                    offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offences, "\n".join(offences)


def test_pure_layers_load_without_dagster():
    code = ("import sys\n"
            + "".join(f"import calmops_dagster.{layer}\n" for layer in PURE if (PACKAGE / layer).is_dir())
            + "".join(f"import {'.'.join(p.relative_to(PACKAGE.parent).with_suffix('').parts)}\n"
                      for layer in PURE for p in layer_modules(layer) if p.name != "__init__.py")
            + "loaded = sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster'))\n"
            + "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_top_level_holds_at_most_six_modules():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert len(modules) <= 6 and modules <= TOP_LEVEL, sorted(modules)


@pytest.mark.parametrize("layer", [layer for layer in ALLOWED if (PACKAGE / layer).is_dir()])
def test_each_layer_says_what_it_holds_and_may_import(layer):
    doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), f"{layer}/__init__.py must say what it may import"


def test_top_level_folders_import_only_under_the_package_namespace(tmp_path):
    """``assets``, ``sensors``, ``resources`` and ``generators`` install as ``calmops_dagster.<name>``: from
    outside the checkout the bare names are not importable (they would shadow other projects' modules)."""
    code = ("import importlib.util, calmops_dagster.generators.real, calmops_dagster.assets, calmops_dagster.sensors\n"
            "import calmops_dagster.resources\n"
            f"print([n for n in {WIRING!r} if importlib.util.find_spec(n) is not None])\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
