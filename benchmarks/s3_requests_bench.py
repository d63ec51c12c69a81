"""Requests each command sends to object storage, against a baseline of older code in the same run.

A moto S3 server (``tests/moto_s3.py``) is started for each code version; a two-block pipeline is created with
``CALMOPS_STORAGE_URL=s3://...`` and ``calmops run``, ``list``, ``sql``, ``report`` and ``delete`` are run
(each in its own process, as a user runs them). The requests of each command are counted from moto's request
log. A count, unlike a time against moto (in memory, on this machine), says what S3 itself would be asked.

The baseline is the same commands on the code of a git revision (``--baseline-ref``, checked out into a
temporary worktree and put first on ``PYTHONPATH``); it runs on this checkout's installed packages.

    python benchmarks/s3_requests_bench.py [--baseline-ref 9e3e11c] [--rows 150]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BUCKET, NAME = "calmops-bench", "s3bench"
COMMANDS = {
    "init": ["init", NAME, "--type", "block", "--data-dir", "{data}", "--target", "y", "--block-col", "block",
             "--model", "sklearn.ensemble.RandomForestClassifier", "--param", "n_estimators=10",
             "--param", "random_state=0"],
    "run": ["run", NAME],
    "list": ["list"],
    "sql": ["sql", "SELECT block, rows FROM blocks ORDER BY block", "--format", "csv"],
    "report": ["report", NAME],
    "delete": ["delete", NAME, "--yes"],
}
#: A request line of moto's (werkzeug's) log: ``"GET /bucket/key HTTP/1.1" 200 -``.
REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) /')
REQUEST_PATH = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d+)')


def count_requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if REQUEST.search(line))


def requests_by_kind(lines: list[str]) -> Counter:
    """Requests counted by method and key, a key's table, block or file name replaced by ``*`` (so that the
    same request of each table counts as one kind), plus its query's first parameter (``list-type``...)."""
    kinds = Counter()
    for line in lines:
        found = REQUEST_PATH.search(line)
        if found is None:
            continue
        method, path, status = found.groups()
        key, _, query = path.partition("?")
        listed = re.search(r"prefix=([^&]*)", query)
        if listed:  # a listing: by the prefix it lists
            key, query = f"{key}/{unquote(listed.group(1))}", "list"
        key = re.sub(r"/metrics/[a-z_]+", "/metrics/*", key)
        key = re.sub(r"/part-[^/]*\.parquet", "/part-*.parquet", key)
        key = re.sub(r"/(blocks|predictions|reports|data_block|drift_report|\w+_model|pieces|estimation)/[^/]+$",
                     r"/\1/*", key)
        key = re.sub(r"/v\d{4}([/-])", r"/vN\1", key)
        key = re.sub(r"/\d{20}\.(json|checkpoint\.parquet)", r"/N.\1", key)
        kinds[f"{method} {key}{'?' + query.split('&')[0].split('=')[0] if query else ''} {status}"] += 1
    return kinds


def requests_per_command(code: Path, rows: int, detail: str | None = None,
                         commands: tuple[str, ...] = tuple(COMMANDS)) -> dict[str, int]:
    """The request count of each of ``commands`` (default: all, in order), with ``code`` first on
    ``PYTHONPATH``; with ``detail`` (a command), that command's requests by kind are printed too."""
    from moto_s3 import moto_s3

    from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
    from calmops_dagster.generators.writer import write_blocks

    work = Path(tempfile.mkdtemp(prefix="s3_requests_"))
    data = work / "data"
    data.mkdir()
    old = time.time() - 60  # stable for the sensor's settle time
    frame = make_drifting_blocks(n_blocks=2, rows_per_block=rows, drift_at=2, seed=3)
    for path in write_blocks(frame, work / "staging", block_col="block"):
        os.utime(shutil.copy(path, data), (old, old))
    log = work / "moto.log"
    try:
        with moto_s3(BUCKET, log_path=log) as aws:
            env = {**os.environ, **aws, "CALMOPS_HOME": str(work / "home"),
                   "CALMOPS_STORAGE_URL": f"s3://{BUCKET}/prefix", "PYTHONPATH": str(code)}
            env.pop("DAGSTER_HOME", None)
            counts = {}
            for command in commands:
                argv = COMMANDS[command]
                before = count_requests(log)
                subprocess.run([sys.executable, "-m", "calmops_dagster.interfaces.cli",
                                *[a.format(data=data) for a in argv]], env=env, cwd=code, check=True,
                               capture_output=True)
                counts[command] = count_requests(log) - before
                if command == detail:
                    lines = log.read_text(errors="replace").splitlines()
                    requested = [line for line in lines if REQUEST.search(line)][before:]
                    print(f"{command} at {code}:")
                    for kind, count in requests_by_kind(requested).most_common():
                        print(f"{count:6d}  {kind}")
            return counts
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="9e3e11c", help="git revision of the baseline's code")
    parser.add_argument("--rows", type=int, default=150, help="rows per block")
    parser.add_argument("--detail", choices=list(COMMANDS), help="print this command's requests by kind")
    parser.add_argument("--no-baseline", action="store_true", help="measure this checkout only")
    args = parser.parse_args()
    if args.no_baseline:
        now = requests_per_command(ROOT, args.rows, args.detail)
        print(f"requests to S3 per command (moto's log), 2 blocks of {args.rows} rows")
        for command in COMMANDS:
            print(f"{command:8s} {now[command]:14d}")
        return
    worktree = Path(tempfile.mkdtemp(prefix="s3_requests_baseline_")) / "code"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline_ref],
                   check=True, capture_output=True)
    try:
        baseline = requests_per_command(worktree, args.rows, args.detail)
        now = requests_per_command(ROOT, args.rows, args.detail)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    print(f"requests to S3 per command (moto's log), 2 blocks of {args.rows} rows")
    print(f"{'command':8s} {'baseline ' + args.baseline_ref:>18s} {'this checkout':>14s} {'ratio':>6s}")
    for command in COMMANDS:
        ratio = baseline[command] / now[command] if now[command] else float("nan")
        print(f"{command:8s} {baseline[command]:18d} {now[command]:14d} {ratio:6.1f}")


if __name__ == "__main__":
    main()
