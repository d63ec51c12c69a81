"""Cheap start-up: the CLI module, ``calmops --help`` and ``calmops list`` import no heavy package, and the
code location (``calmops_dagster.definitions``) no module that only a running step needs.

Each check runs in a fresh interpreter and looks at ``sys.modules`` afterwards, so an import added at module
level anywhere on the path (the CLI, the spec, the stores, the generators' parser, the asset factories)
fails here by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import block_spec_dict

#: Packages that take from a tenth of a second (numpy) to seconds (torch via sdv) to import.
HEAVY = ("numpy", "pandas", "scipy", "sklearn", "dagster", "torch", "sdv", "river", "plotly", "lightgbm",
         "fastapi", "uvicorn", "frouros", "skops", "pyarrow", "duckdb")


#: What the steps of a run import when they execute (drift engine, estimator, training, promotion, the
#: plotly report), never the code location while it only builds the definitions.
STEP_ONLY = ("plotly", "calmops_dagster.drift.univariate", "calmops_dagster.drift.multivariate",
             "calmops_dagster.estimation", "calmops_dagster.learning.training", "calmops_dagster.learning.promotion",
             "calmops_dagster.reports.block_report", "torch", "sdv", "river", "fastapi", "frouros")


def imported_after(code: str, env: dict | None = None, top_level: bool = True) -> list[str]:
    names = "m for m in sys.modules if '.' not in m" if top_level else "sys.modules"
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({names})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_cli_module_and_its_parser_import_no_heavy_package():
    loaded = imported_after("from calmops_dagster.interfaces.cli import build_parser\nbuild_parser()")
    assert not [m for m in HEAVY if m in loaded], [m for m in HEAVY if m in loaded]


def test_calmops_list_reads_specs_and_metrics_without_the_model_libraries(tmp_path):
    home = tmp_path / "home"
    path = home / "pipelines" / "fast" / "pipeline.yaml"
    path.parent.mkdir(parents=True)
    raw = block_spec_dict("fast", str(tmp_path))
    raw["model_spec"] = {"module": "lightgbm", "class": "LGBMClassifier", "params": {"verbose": -1}}
    path.write_text(yaml.safe_dump(raw))
    loaded = imported_after(f"from calmops_dagster.interfaces.cli import main\nmain(['--home', {str(home)!r}, 'list'])")
    assert not [m for m in HEAVY if m in loaded and m != "duckdb"], [m for m in HEAVY if m in loaded]
    assert "duckdb" in loaded  # it did read the metrics store


def test_the_code_location_imports_what_building_the_definitions_needs_only(tmp_path):
    home = tmp_path / "home"
    path = home / "pipelines" / "fast" / "pipeline.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(block_spec_dict("fast", str(tmp_path))))
    env = {**os.environ, "CALMOPS_HOME": str(home)}
    loaded = imported_after("import calmops_dagster.definitions as d\nassert d.defs.resolve_job_def('fast_job')",
                            env=env, top_level=False)
    assert not [m for m in STEP_ONLY if m in loaded], [m for m in STEP_ONLY if m in loaded]


def test_calmops_demo_names_its_model_without_importing_scikit_learn(tmp_path):
    """The demo's spec names RandomForestClassifier; the run that trains it imports it."""
    home = tmp_path / "home"
    loaded = imported_after("from calmops_dagster.interfaces.cli import main\n"
                            f"main(['--home', {str(home)!r}, 'demo', '--initial', '0', '--blocks', '2'])")
    assert "sklearn" not in loaded and "pandas" in loaded  # it did write the demo's blocks
    assert (home / "pipelines" / "demo" / "pipeline.yaml").is_file()
