"""Helpers shared by the tutorials: a throw-away CALMOPS_HOME and the `calmops` command in-process."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def tutorial_home(description: str) -> Path:
    """Parse ``--home`` (default ``./tutorial-home/<script>``), start it empty and export CALMOPS_HOME."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", help="CALMOPS_HOME to use (emptied first)")
    args = parser.parse_args()
    script = Path(__import__("__main__").__file__).stem
    home = Path(args.home or Path.cwd() / "tutorial-home" / script).resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["CALMOPS_HOME"] = str(home)
    return home


def calmops(*argv: str) -> None:
    """Run one `calmops` command in this process (what typing it in a shell does), failing loudly."""
    from calmops_dagster.interfaces.cli import main

    print(f"\n$ calmops {' '.join(argv)}", flush=True)
    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"calmops {argv[0]} exited with {code}")


def deliver(paths, data_dir: Path) -> None:
    """Copy data files into the watched folder as a finished upload would leave them.

    The sensor (and `calmops run`) reads a file only once it is stable: its modification time is at least
    ``sensor.settle_seconds`` (default 5 s) old. A tutorial does not want to wait, so the copies are dated
    a minute back.
    """
    import time

    for path in paths:
        target = Path(data_dir) / Path(path).name
        shutil.copy(path, target)
        old = time.time() - 60
        os.utime(target, (old, old))
