"""Runnable tutorials shipped with the package; ``calmops tutorials --out DIR`` copies them.

Each ``NN_*.py`` script runs on its own (``python 01_block_pipeline.py``), works in a throw-away
``CALMOPS_HOME`` next to it (``./tutorial-home``, or ``--home DIR``), uses small seeded data and finishes in
seconds. ``README.md`` says what each one shows.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from calmops_dagster.errors import CalmOpsError

FILES_SUFFIXES = (".py", ".md")


def tutorial_files() -> list[str]:
    """Names of the tutorial files in the package (scripts and README), sorted."""
    root = resources.files(__package__)
    return sorted(p.name for p in root.iterdir()
                  if p.name.endswith(FILES_SUFFIXES) and not p.name.startswith("__"))


def copy_tutorials(out: str | Path, force: bool = False) -> Path:
    """Copy the tutorials to ``out``; refuse to overwrite existing files unless ``force``."""
    out = Path(out)
    names = tutorial_files()
    clashes = [n for n in names if (out / n).exists()]
    if clashes and not force:
        raise CalmOpsError(f"{out} already holds {clashes}; use --force to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    root = resources.files(__package__)
    for name in names:
        with resources.as_file(root / name) as source:
            shutil.copyfile(source, out / name)
    return out
