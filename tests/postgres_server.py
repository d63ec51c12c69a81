"""A real, throw-away PostgreSQL server for tests: Debian's ``postgresql`` package, run by hand.

``initdb`` makes a cluster in a fresh temporary data directory, ``pg_ctl`` starts it on a free port of
127.0.0.1 (its Unix socket inside the data directory, so it never meets a system cluster), and it is
stopped and deleted afterwards. PostgreSQL refuses to run as root, so when the tests run as root the server
runs as the ``postgres`` user the Debian package creates, in a data directory it owns under ``/tmp``.
``make test`` (and ``.ci/run`` through it) installs the package when it is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from live_processes import free_port

SUPERUSER = "calmops"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    database: str


def _bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: Debian keeps them off PATH, under /usr/lib/postgresql/<v>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL's initdb is not installed: apt-get install postgresql (make test does)")


@contextmanager
def postgres_server(database: str = "calmops_dagster"):
    """Start a PostgreSQL server with ``database`` in it; yield its :class:`PostgresServer`; stop it after."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="calmops-pg-"))
    if as_root:
        shutil.chown(data, "postgres", "postgres")

    def pg(*argv, **kwargs):
        return subprocess.run([*prefix, *argv], check=True, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, **kwargs)

    def setup(*argv):
        try:
            pg(*argv)
        except subprocess.CalledProcessError as exc:
            log = data / "server.log"
            raise RuntimeError(f"{argv[0]} failed: {exc.stderr}{log.read_text() if log.exists() else ''}") from exc

    port = free_port()
    started = False
    try:
        setup(str(bindir / "initdb"), "-D", str(data / "cluster"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
              "--no-sync", "--no-instructions")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        setup(str(bindir / "pg_ctl"), "-D", str(data / "cluster"), "-o", options, "-l", str(data / "server.log"),
              "-w", "-t", "120", "start")
        started = True
        setup(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, database)
        yield PostgresServer("127.0.0.1", port, SUPERUSER, database)
    finally:
        if started:
            pg(str(bindir / "pg_ctl"), "-D", str(data / "cluster"), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(data, ignore_errors=True)
