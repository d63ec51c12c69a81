"""The package's layers: pure layers import no Dagster, no layer imports one above it, and Dagster's private
API is used only in the speed-ups subpackage.

Every ``import`` in a module counts, also one inside a function: a lazy import still couples the layers.
"""

import ast
import functools
import importlib
import re
import shutil
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
    "reports": {"drift", "store"},
    "steps": {"drift", "estimation", "learning", "ingest", "store", "reports"},
    "orchestration": {"drift", "estimation", "learning", "ingest", "store", "reports", "steps"},
    # Dagster loads the storage and the run launcher by name from dagster.yaml; they set orchestration's run tags
    "speedups": {"store", "orchestration"},
    "interfaces": {"drift", "estimation", "learning", "ingest", "store", "reports", "steps", "orchestration",
                   "speedups"},
}
PURE = ("drift", "estimation", "learning", "ingest", "store", "reports", "steps")
#: Top-level modules every layer may use: the spec and the typed errors.
SHARED = {"spec", "errors"}
#: The top-level folders installed as calmops_dagster.<name>: Dagster wiring and data generators.
WIRING = ("assets", "sensors", "resources", "generators")
TOP_LEVEL = {"__init__", "definitions", "spec", "errors", "ipip", "river_models"}
#: The speed-ups' switch (``calmops_dagster/speedups/__init__.py``, no Dagster in it): every Dagster-wiring layer
#: may ask it, while only the layers ALLOWED above import the speed-ups' modules.
SWITCH = "calmops_dagster.speedups"


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


def offences(layer: str, paths: list[Path]) -> list[str]:
    """The imports in ``paths`` (modules of ``layer``) that break the layer rules."""
    found = []
    for path in paths:
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "dagster" or parts[0].startswith("dagster_"):
                if layer in PURE:
                    found.append(f"{path.name} imports {name}")
            elif parts[0] == "calmops_dagster" and len(parts) > 1 and parts[1] in WIRING:
                if layer not in ("orchestration", "interfaces"):
                    found.append(f"{path.name} imports {name}")
            elif name == SWITCH:
                if layer in PURE:
                    found.append(f"{path.name} imports {name}")
            elif parts[0] == "calmops_dagster" and len(parts) > 1:
                target = parts[1]
                if target != layer and target not in SHARED and target not in ALLOWED[layer]:
                    found.append(f"{path.name} imports {name}")
    return found


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_layer_imports_only_layers_below(layer):
    found = offences(layer, layer_modules(layer))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("planted", ["from dagster import asset", "import dagster_graphql",
                                     "from calmops_dagster.orchestration.run_tags import VERSION_TAG",
                                     "from calmops_dagster.assets.wiring import open_step"])
def test_a_step_that_imports_dagster_or_the_wiring_is_caught(tmp_path, planted):
    """The steps are a pure layer: a lazy import inside a function counts too."""
    step = tmp_path / "planted_step.py"
    step.write_text(f"def step(ctx):\n    {planted}\n    return ctx\n")
    assert offences("steps", [step]) == [f"planted_step.py imports {planted.split()[1]}"]
    assert offences("orchestration", [step]) == []  # the same import is fine in the Dagster wiring


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


# Dagster's private API: only calmops_dagster/speedups/ may use it.

REPO = PACKAGE.parent
SPEEDUPS = Path("calmops_dagster") / "speedups"
#: Private names of other libraries that the code outside the speed-ups uses on purpose, by file: not Dagster's.
NOT_DAGSTER = {
    ("calmops_dagster/store/write_once_reads.py", "_strip_protocol"): "fsspec",
    ("calmops_dagster/store/write_once_reads.py", "_info"): "s3fs (overridden and called through super())",
    ("calmops_dagster/store/object_store.py", "_call_s3"): "s3fs (overridden and called through super())",
    ("calmops_dagster/store/object_store.py", "_s3"): "s3fs (its botocore client: the endpoint it called)",
    ("calmops_dagster/learning/river_models.py", "_multiclass"): "river",
}
#: A module path inside Dagster's private modules, e.g. "dagster._cli.api" or "dagster_graphql._x" in a string.
PRIVATE_MODULE_PATH = re.compile(r"\bdagster(?:_[a-z]+)?(?:\.[a-z]\w*)*\._[a-z]")


def private_module(name: str) -> bool:
    """``dagster._core...``, ``dagster_graphql._x``, or Dagster's internal ``dagster_shared`` package."""
    parts = name.split(".")
    dagster_family = parts[0] == "dagster" or parts[0].startswith("dagster_")
    return dagster_family and (parts[0] == "dagster_shared" or any(p.startswith("_") for p in parts[1:]))


def private_name(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def shipped_modules(root: Path) -> list[Path]:
    """The package's modules and the wiring folders', outside the speed-ups subpackage."""
    files = [*(root / "calmops_dagster").rglob("*.py"), *(p for w in WIRING for p in (root / w).rglob("*.py"))]
    return sorted(p for p in files if (root / SPEEDUPS) not in p.parents)


def defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, assigned names and attributes, arguments."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def dagster_bases(tree: ast.AST, cls: ast.ClassDef) -> list[type]:
    """The classes ``cls`` derives from that the module imports from a Dagster package."""
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("dagster"):
            imported.update({alias.asname or alias.name: (node.module, alias.name) for alias in node.names})
        elif isinstance(node, ast.Import):
            imported.update({alias.asname or alias.name: (alias.name, None) for alias in node.names
                             if alias.name.split(".")[0].startswith("dagster")})
    bases = []
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in imported and imported[base.id][1]:
            module, name = imported[base.id]
            bases.append(getattr(importlib.import_module(module), name))
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in imported:
            bases.append(getattr(importlib.import_module(imported[base.value.id][0]), base.attr))
    return [base for base in bases if isinstance(base, type)]


@functools.cache
def module_facts(where: str, text: str) -> tuple[frozenset[str], tuple[tuple[str, str | None], ...]]:
    """(the names the module defines, its candidate private-API uses): each use is (what, attribute), where
    an attribute use counts only if no module of ours defines that attribute. Cached by the file's text."""
    tree = ast.parse(text, filename=where)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    uses = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            uses += [(f"{line} imports {a.name}", None) for a in node.names if private_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if private_module(node.module):
                uses.append((f"{line} imports from {node.module}", None))
            elif node.module.split(".")[0].startswith("dagster"):
                uses += [(f"{line} imports {node.module}.{a.name}", None) for a in node.names if private_name(a.name)]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and PRIVATE_MODULE_PATH.search(node.value)):
            uses.append((f"{line} names {node.value[:80]!r}", None))
        elif isinstance(node, ast.Attribute) and private_name(node.attr) and (where, node.attr) not in NOT_DAGSTER:
            through_super = (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                             and node.value.func.id == "super")
            uses.append((f"{line} uses {ast.unparse(node)}", None if through_super else node.attr))
        elif isinstance(node, ast.ClassDef):
            bases = dagster_bases(tree, node)
            uses += [(f"{where}:{item.lineno} overrides {base.__name__}.{item.name}", None)
                     for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                     and private_name(item.name) for base in bases if hasattr(base, item.name)]
    return frozenset(defined_names(tree)), tuple(uses)


def private_api_uses(root: Path) -> list[str]:
    """Every use of Dagster's private API in the shipped code under ``root`` outside the speed-ups: an import
    of a private module (or a private name from a public one), a private module named in a string (a dynamic
    import, a dagster.yaml), a private attribute that our own code does not define (``client._execute``,
    ``self._db_lock`` in a subclass), a parent's private member reached through ``super()``, and a private
    method of a Dagster class overridden."""
    facts = [module_facts(path.relative_to(root).as_posix(), path.read_text()) for path in shipped_modules(root)]
    ours = set().union(*(names for names, _ in facts))
    return [what for _, uses in facts for what, attribute in uses if attribute is None or attribute not in ours]


def test_dagsters_private_api_is_used_only_in_the_speedups():
    uses = private_api_uses(REPO)
    assert not uses, "Dagster's private API outside calmops_dagster/speedups/:\n" + "\n".join(uses)


#: One planted use of each kind the check must find: (file, code appended to it, what the check reports).
PLANTED = [
    ("calmops_dagster/orchestration/headless_runs.py", "from dagster._core.errors import DagsterError\n",
     "imports from dagster._core.errors"),
    ("calmops_dagster/interfaces/cli.py", "import dagster._check\n", "imports dagster._check"),
    ("calmops_dagster/orchestration/instance.py", "from dagster import _check\n", "imports dagster._check"),
    ("calmops_dagster/orchestration/dagster_control.py", "def rows(client):\n    return client._execute('q')\n",
     "uses client._execute"),
    ("sensors/file_sensor.py", "LAUNCHER = {'module': 'dagster._core.launcher'}\n",
     "names 'dagster._core.launcher'"),
    ("resources/home.py", ("from dagster import DagsterInstance\n\n\nclass Quick(DagsterInstance):\n"
                           "    def _wiped(self):\n        return self._run_storage\n"), "uses self._run_storage"),
    ("resources/home.py", ("from dagster import DagsterInstance\n\n\nclass Quick(DagsterInstance):\n"
                           "    def _should_retry_run(self, run):\n        return False\n"),
     "overrides DagsterInstance._should_retry_run"),
    ("resources/home.py", "class Storage:\n    def _connect(self):\n        return super()._connect()\n",
     "uses super()._connect"),
]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The shipped code copied to a temporary folder, for planting violations."""
    root = tmp_path_factory.mktemp("source")
    for folder in ("calmops_dagster", *WIRING):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("target, code, reported", PLANTED, ids=[f"{p[0]}: {p[2]}" for p in PLANTED])
def test_a_planted_private_api_use_is_reported_outside_the_speedups_only(source_copy, target, code, reported):
    path = source_copy / target
    original = path.read_text()
    try:
        path.write_text(original + "\n\n" + code)
        uses = private_api_uses(source_copy)
        assert any(target in use and reported in use for use in uses), uses
        planted_in_speedups = source_copy / SPEEDUPS / "planted.py"
        path.write_text(original)
        planted_in_speedups.write_text(code)
        assert private_api_uses(source_copy) == []
    finally:
        path.write_text(original)
        (source_copy / SPEEDUPS / "planted.py").unlink(missing_ok=True)


def test_the_architecture_page_names_files_and_steps_that_exist():
    """docs/architecture.md's tables: each asset module and the step function it calls, and each file of
    "where to change what", exist (a renamed module or step makes the page wrong, and this test fail)."""
    root = PACKAGE.parent
    page = (root / "docs" / "architecture.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    steps = [re.findall(r"`([^`]+)`", row)[:2] for row in rows if "`assets/" not in row and ": " in row]
    assert len(steps) >= 5
    for asset_module, step in steps:
        module, function = step.split(": ")
        assert (root / "assets" / asset_module).is_file(), asset_module
        source = (PACKAGE / "steps" / module).read_text()
        assert f"def {function}(" in source, step
        assert f"import {function}" in (root / "assets" / asset_module).read_text(), (asset_module, function)
    where = page[page.index("## Where to change what"):]
    paths = [re.findall(r"`([^`]+)`", line.split("|")[2])[0] for line in where.splitlines()
             if line.startswith("| ") and "`" in line.split("|")[2]]
    assert len(paths) >= 3
    for path in paths:
        assert (root / path.rstrip("/")).exists(), path


# The assets: thin Dagster functions over one step each (docs/architecture.md).

ASSETS = REPO / "assets"
#: Longest asset function body, in lines (the issue's bar; the assets run 4 to 12 today).
MAX_ASSET_BODY_LINES = 60
#: Where an asset body must not call into: the stores, the interfaces (alerts, CLI) and the alerts' wiring.
WRITERS = ("calmops_dagster.store", "calmops_dagster.interfaces", "calmops_dagster.assets.block_alerts")
ASSET_DECORATORS = {"asset", "multi_asset", "graph_asset", "graph_multi_asset"}


def asset_functions(tree: ast.AST) -> list[ast.FunctionDef]:
    """The functions decorated ``@asset`` (or another asset decorator), at any depth (factories nest them)."""
    def name(decorator: ast.expr) -> str:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and any(name(d) in ASSET_DECORATORS for d in node.decorator_list)]


def imported_from(tree: ast.AST) -> dict[str, str]:
    """Each name the module imports (anywhere) -> the module it comes from."""
    return {alias.asname or alias.name: node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}


def asset_offences(path: Path) -> list[str]:
    """What breaks the assets' rules in ``path``: a body over :data:`MAX_ASSET_BODY_LINES` lines, a call into
    :data:`WRITERS` (a storage write, an alert sent), or not exactly one step called."""
    tree = ast.parse(path.read_text(), filename=str(path))
    origin, found = imported_from(tree), []
    for function in asset_functions(tree):
        where = f"{path.name}: {function.name}"
        lines = function.end_lineno - function.body[0].lineno + 1
        if lines > MAX_ASSET_BODY_LINES:
            found.append(f"{where}: body of {lines} lines (at most {MAX_ASSET_BODY_LINES})")
        calls = sorted((node.lineno, node.col_offset, node.func.id) for node in ast.walk(function)
                       if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in origin)
        called = [name for *_, name in calls]
        found += [f"{where} calls {name} ({origin[name]})" for name in called
                  if origin[name] == WRITERS[-1] or origin[name].startswith(WRITERS[:-1])]
        steps = [name for name in called if origin[name].startswith("calmops_dagster.steps.")]
        if len(steps) != 1:
            found.append(f"{where} calls {len(steps)} steps ({', '.join(steps) or 'none'}), not one")
    return found


def test_every_asset_is_a_short_body_over_one_step_that_writes_nothing():
    modules = sorted(ASSETS.glob("*.py"))
    assert sum(len(asset_functions(ast.parse(p.read_text()))) for p in modules) >= 5  # the five assets found
    found = [offence for path in modules for offence in asset_offences(path)]
    assert not found, "\n".join(found)


PLANTED_ASSET = '''
from dagster import asset
from calmops_dagster.assets.block_alerts import alert_run
from calmops_dagster.steps.results import LoadedBlock


def build(spec):
    @asset(name="scores")
    def scores(context, data_block: LoadedBlock):
        from calmops_dagster.steps.assess_block import assess_block
        from calmops_dagster.store.metrics_store import MetricsStore

        result = assess_block(context, data_block)
{filler}        MetricsStore(context).append_rows("alerts", [])
        alert_run(context)
        return result

    return scores
'''


def test_a_planted_long_asset_that_writes_is_caught(tmp_path):
    planted = tmp_path / "planted_asset.py"
    planted.write_text(PLANTED_ASSET.format(filler="        result = result\n" * 54))  # a body of 61 lines
    assert asset_offences(planted) == [
        "planted_asset.py: scores: body of 61 lines (at most 60)",
        "planted_asset.py: scores calls MetricsStore (calmops_dagster.store.metrics_store)",
        "planted_asset.py: scores calls alert_run (calmops_dagster.assets.block_alerts)"]
    planted.write_text(PLANTED_ASSET.format(filler="        result = result\n" * 53)
                       .replace('        MetricsStore(context).append_rows("alerts", [])\n', "        pass\n")
                       .replace("        alert_run(context)\n", "        result = assess_block(context, result)\n"))
    assert asset_offences(planted) == ["planted_asset.py: scores calls 2 steps (assess_block, assess_block), not one"]
    planted.write_text(planted.read_text().replace("        result = assess_block(context, result)\n", ""))
    assert asset_offences(planted) == []  # 59 lines, one step, no write


# Module docstrings say what and why; an essay belongs in docs/ (issue 29).

#: Longest module docstring, in source lines from its opening quotes to its closing ones.
MAX_MODULE_DOCSTRING_LINES = 25


def long_module_docstrings(paths: list[Path]) -> list[str]:
    """The modules of ``paths`` whose docstring spans more than :data:`MAX_MODULE_DOCSTRING_LINES` lines."""
    found = []
    for path in paths:
        body = ast.parse(path.read_text(), filename=str(path)).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            lines = body[0].end_lineno - body[0].lineno + 1
            if lines > MAX_MODULE_DOCSTRING_LINES:
                found.append(f"{path.name}: module docstring of {lines} lines (at most "
                             f"{MAX_MODULE_DOCSTRING_LINES}: move the essay to docs/)")
    return found


def test_module_docstrings_are_short():
    found = long_module_docstrings(shipped_modules(REPO) + sorted((REPO / SPEEDUPS).rglob("*.py")))
    assert not found, "\n".join(found)


def test_a_planted_long_module_docstring_is_caught(tmp_path):
    essay, short = tmp_path / "essay.py", tmp_path / "short.py"
    essay.write_text('"""What it is.\n\n' + "Why, at length.\n" * 23 + '"""\n\nVALUE = 1\n')  # 26 lines
    short.write_text('"""What it is.\n\n' + "Why.\n" * 22 + '"""\n\n\ndef f():\n    """' + "x\n" * 40 + '"""\n')
    assert long_module_docstrings([essay, short]) == [
        "essay.py: module docstring of 26 lines (at most 25: move the essay to docs/)"]
