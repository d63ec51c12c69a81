"""Many pipelines through one instance: ``calmops run`` of different pipelines at once, or one ``dagster dev``.

``--pipelines`` demo pipelines (``calmops demo --name pN``) share one ``CALMOPS_HOME``, so one Dagster
instance and one set of metric tables. ``--pipelines`` takes several sizes (``10,50``): each is measured on
fresh homes, and the growth from the smallest size (the baseline) is printed side by side at the end.
Every mode checks metric rows lost: every pipeline must have every block in ``blocks``, ``drift_summary`` and
``promotions``, and no block twice.

Without ``--through-dev``, each size is processed twice by ``calmops run`` processes (every block file
already in the watched folder): baseline ``one at a time`` (one ``calmops run`` after the other) and
``N at once`` (``--parallel`` ``calmops run`` processes of different pipelines at the same time, as the run
queue allows). Printed per mode: wall time, blocks per minute, the largest peak memory of one
``calmops run`` process.

With ``--through-dev``, each size goes through ONE real ``dagster dev`` (``calmops dev`` in its own process
group): once every pipeline's file sensor has ticked, every block file of every pipeline is dropped into its
watched folder at once (written beside it, renamed in); the file sensors request the runs, the run queue
(4 runs at once, one per pipeline) and the instance's run launcher (the warm launcher;
``CALMOPS_RUN_LAUNCHER=dagster`` in the environment: Dagster's default) process them. Printed per size:

- start-up: ``calmops dev`` started -> webserver answers -> every file sensor has a tick;
- wall time from the first drop to the end of the last run, blocks per minute, median run duration;
- file sensor ticks in that window (Dagster's tick records, ``instance.get_ticks``): duration (tick start
  to end) median and max, and lateness: the gap between consecutive tick starts of one sensor minus its
  ``interval_seconds`` (0 = on time; it includes the daemon's loop and every other sensor evaluated before);
- peak memory of dagster dev's process group, sampled each second from ``/proc``: the peak of the summed
  RSS (forked run workers share pages with the warm process, so this counts them more than once), the peak
  of the summed PSS (shared pages split between their processes: the honest total), the largest single
  process, and the most processes at once;
- failed runs and metric rows lost.

With ``--steady REF,REF`` (e.g. ``main,HEAD``), one size goes through one ``dagster dev`` per git revision,
each extracted with ``git archive`` and run from that copy, one after the other in the same invocation, on
the same fresh demo pipelines: steady arrivals, pipeline ``i`` receiving its blocks every ``--every``
seconds from ``i * every / pipelines`` on (staggered, as in production), for ``--blocks`` blocks, then
``--drain`` seconds more. The window is bounded on purpose (a few minutes per side on a shared machine), so
not every block need be processed by its end; printed per revision:

- the number of sensors; the seconds of sensor evaluation (every sensor's ticks, start to end) per minute of
  the window: the daemon's sensor work; the median number of ticks of one file sensor; file-sensor tick duration and lateness (median, 95th percentile,
  worst) in the window;
- blocks landed, runs requested, succeeded and failed, blocks done per pipeline (min / median / max) and the
  share of pipelines with at least one block done (evenness);
- unrequested: landed blocks that no run was requested for by the end of the window (how far the file
  sensors are behind; they are requested by later ticks, never dropped);
- blocks lost: a succeeded block whose rows are missing from or doubled in ``blocks``, ``drift_summary`` or
  ``promotions`` (must be 0);
- landing to drift report: from a block file's landing to its ``drift_report`` materialization (Dagster's
  event log), median, 95th percentile and worst, for the blocks reported within the window;
- the fair queue's rule (``calmops_dagster/orchestration/fair_queue.py``), checked on the runs' start times:
  every pipeline's first landed block starts before any pipeline's third; blocks done per pipeline (min /
  median / max) every minute of the window; peak memory of dagster dev's group, in all and by role.

``--burst REF,REF`` is the same with every pipeline receiving its ``--blocks`` blocks at once, and a window
that lasts until every block's run has finished (at most ``--timeout`` seconds, default 900; what was done by
then is reported). ``--postgres`` runs each revision a second time on the Postgres instance
``deploy/dagster.yaml`` describes (Dagster's default run launcher instead of Docker's, a throwaway PostgreSQL
server from ``tests/postgres_server.py``, plain ``dagster dev``), side by side with the local instance.
``--sides`` names the sides instead: ``local`` (SQLite, warm launcher), ``local-default`` (SQLite, Dagster's
default launcher), ``postgres`` (default launcher), ``postgres-warm`` (the warm launcher on Postgres). Each
side also prints its blocks per minute and the CPU seconds per block done of dagster dev's whole process
group by role (from ``/proc``, sampled every 0.5 s over the window), with the load average in the window.

With ``--idle-memory``, each ``--pipelines`` size is served by one ``calmops dev`` of the working tree with
idle pipelines (specs, no block files) until every file sensor has ticked ``--ticks`` times; printed per size:
the peaks of dagster dev's summed RSS and PSS, by role (webserver, daemon, code server, code-server proxy,
``dagster dev``), and from the smallest size to the largest the MB per added pipeline.

    python benchmarks/scale_bench.py [--pipelines 4] [--blocks 3] [--rows 200] [--parallel 4]
    python benchmarks/scale_bench.py --through-dev --pipelines 10,50 --blocks 20 --rows 200
    python benchmarks/scale_bench.py --steady c88297c,HEAD --pipelines 200 --blocks 2 --every 90 --drain 60
    python benchmarks/scale_bench.py --burst HEAD --postgres --pipelines 16 --blocks 5
    python benchmarks/scale_bench.py --idle-memory --pipelines 10,200
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.live_processes import answers_200, free_port, stop_group, wait_for  # after ROOT is on the path

CALMOPS = [sys.executable, "-m", "calmops_dagster.interfaces.cli"]


def make_home(home: Path, pipelines: int, blocks: int, rows: int, initial: int) -> list[str]:
    """``pipelines`` demo pipelines ``p0``, ``p1`` ... (what ``calmops demo --name pN`` creates), each with
    its first ``initial`` block files in its watched folder; their names."""
    from calmops_dagster.interfaces.demo import create_demo
    from calmops_dagster.store.paths import CalmOpsHome

    names = [f"p{i}" for i in range(pipelines)]
    for i, name in enumerate(names):
        create_demo(CalmOpsHome.from_env(home), name, blocks=blocks, rows_per_block=rows,
                    drift_at=max(2, blocks), initial=initial, seed=i)
    return names


def run_all(home: Path, names: list[str], parallel: int) -> tuple[float, float, list[str]]:
    """Run ``calmops run`` for every pipeline, ``parallel`` at a time; (wall s, peak MB, failed names)."""
    pending, running, failed, peak_kb = list(names), {}, [], 0
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            proc = subprocess.Popen([*CALMOPS, "--home", str(home), "run", name], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            running[proc.pid] = name
        pid, status, usage = os.wait4(-1, 0)
        if pid in running:
            name = running.pop(pid)
            peak_kb = max(peak_kb, usage.ru_maxrss)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(name)
    return time.perf_counter() - start, peak_kb / 1024, failed


def lost_rows(home: Path, names: list[str], blocks: int) -> int:
    from calmops_dagster.store.metrics_store import MetricsStore

    store, lost = MetricsStore(home / "metrics.duckdb"), 0
    for table in ("blocks", "drift_summary", "promotions"):
        frame = store.query(f"SELECT pipeline, block, count(*) AS n FROM {table} GROUP BY ALL")
        for name in names:
            mine = frame[frame.pipeline == name]
            lost += blocks - len(mine) + int((mine.n > 1).sum())
    return lost


class GroupMemory:
    """Samples, each second, the memory of every process of one process group (from ``/proc``) and keeps
    the peaks: summed RSS, summed PSS, the largest single RSS (and its command), the most processes, and
    per role (:func:`role`: webserver, daemon, code server, run workers...) the peak of its summed RSS and
    PSS."""

    def __init__(self, pgid: int, every: float = 1.0):
        self.pgid, self.every = pgid, every
        self.rss_sum = self.pss_sum = self.largest = self.processes = 0
        self.largest_command = ""
        self.roles: dict[str, list[int]] = {}  # role -> [peak RSS sum, peak PSS sum, most processes] in kB
        self.cpu: dict[int, list] = {}  # pid -> [role, CPU ticks at the last sample, CPU ticks at the mark]
        self.loads: list[float] = []  # the 1-min load average at each sample since the mark
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        rss_sum = pss_sum = count = 0
        roles: dict[str, list[int]] = {}
        pids = group_pids(self.pgid)
        self.loads.append(os.getloadavg()[0])
        for pid in pids:
            self._sample_cpu(pid, pids)
            rss, pss = _kb(f"/proc/{pid}/status", "VmRSS:"), _kb(f"/proc/{pid}/smaps_rollup", "Pss:")
            rss_sum, pss_sum, count = rss_sum + rss, pss_sum + pss, count + (rss > 0)
            if rss > self.largest:
                self.largest, self.largest_command = rss, _command(pid)
            if not rss:  # exited, or a zombie
                continue
            mine = roles.setdefault(role(pid, pids), [0, 0, 0])
            mine[0], mine[1], mine[2] = mine[0] + rss, mine[1] + pss, mine[2] + (rss > 0)
        self.rss_sum, self.pss_sum = max(self.rss_sum, rss_sum), max(self.pss_sum, pss_sum)
        self.processes = max(self.processes, count)
        for name, values in roles.items():
            peak = self.roles.setdefault(name, [0, 0, 0])
            self.roles[name] = [max(a, b) for a, b in zip(peak, values, strict=True)]


    def _sample_cpu(self, pid: int, pids: list[int]) -> None:
        """Remember ``pid``'s CPU time (user + system) and role; a process that exits between two samples loses
        at most one interval of its CPU, and a forked run worker is counted from its fork."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        entry = self.cpu.setdefault(pid, ["", 0, None])
        name = role(pid, pids)
        if name not in ("exited", "no command line"):
            entry[0] = name
        entry[1] = max(entry[1], ticks)

    def mark(self) -> None:
        """Start counting CPU seconds (:meth:`cpu_by_role`) and load averages from now."""
        self.sample()
        for entry in self.cpu.values():
            entry[2] = entry[1]
        self.loads = [os.getloadavg()[0]]

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of dagster dev's processes since :meth:`mark`, by role (a process started after the
        mark counts from its start; a run worker forked from the warm process from its fork)."""
        per_tick, roles = 1 / os.sysconf("SC_CLK_TCK"), {}
        for name, ticks, marked in self.cpu.values():
            key = name or "unknown"
            roles[key] = roles.get(key, 0.0) + (ticks - (marked or 0)) * per_tick
        return roles


def group_pids(pgid: int) -> list[int]:
    """The pids of the processes of process group ``pgid``, from ``/proc/<pid>/stat``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        if int(stat[stat.rindex(")") + 2:].split()[2]) == pgid:  # after "(comm) ": state, ppid, pgrp
            pids.append(int(entry.name))
    return pids


def role(pid: int, group: list[int]) -> str:
    """What process ``pid`` of dagster dev's group is, from its command line: ``dagster dev``, webserver,
    daemon, code server, warm process (the warm launcher's), run worker (forked from the warm process, or
    spawned for Dagster's default launcher); "no command line": a process exiting (or not yet started)."""
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return "exited"  # between the sample's reads
    if not text.strip():
        return "no command line"
    if "warm_run_worker" in text:
        return "run worker" if parent in group and "warm_run_worker" in _command(parent) else "warm process"
    for key, name in (("execute_run", "run worker"), ("api execute", "run worker"),
                      ("multiprocessing", "run worker"),  # spawned for Dagster's default launcher
                      ("webserver", "webserver"),
                      ("daemon", "daemon"), ("code-server start", "code-server proxy"), ("grpc", "code server"),
                      (" dev ", "dagster dev"), ("tail -F", "compute-log tailers"),
                      ("poll_compute_logs", "compute-log tailers"), ("watch_orphans", "compute-log tailers")):
        if key in text:
            return name
    return _command(pid)


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as lines:
            return next((int(line.split()[1]) for line in lines if line.startswith(key)), 0)
    except OSError:  # exited meanwhile
        return 0


def _command(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    return " ".join(arg for arg in args[1:5] if arg)[:70]


FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


@contextlib.contextmanager
def live_dev(command: list[str], env: dict, log_path: Path, port: int):
    """`calmops dev` (``command``) in its own process group, up until its webserver answers on ``port``, its
    memory sampled (the :class:`GroupMemory` yielded); the whole group (webserver, daemon, code server, warm
    process and run workers) is stopped after."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(ROOT))
    try:
        with GroupMemory(process.pid) as memory:
            wait_for(lambda: answers_200(f"http://127.0.0.1:{port}/server_info", process, timeout=2), 900,
                     "dagster dev's webserver")
            yield memory
    finally:
        stop_group(process, timeout=60)


#: The file sensor serving every pipeline; revisions before it had one ``<pipeline>_files`` per pipeline.
ONE_FILE_SENSOR = "calmops_files"


def file_sensor_states(instance, names: list[str], ticks: int = 1) -> list | None:
    """The stored states of the file sensors serving the pipelines ``names`` once each has ticked ``ticks``
    times (``None`` before): the one :data:`ONE_FILE_SENSOR`, or ``<name>_files`` per pipeline."""
    from dagster._core.scheduler.instigation import InstigatorType

    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    mine = ([s for s in states if s.instigator_name == ONE_FILE_SENSOR]
            or [s for s in states if s.instigator_name in {f"{name}_files" for name in names}])
    expected = 1 if any(s.instigator_name == ONE_FILE_SENSOR for s in mine) else len(names)
    done = [s for s in mine if len(instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=ticks)) >= ticks]
    return mine if len(done) == expected else None


def sensor_interval(sensor: str, interval: dict[str, int]) -> int:
    """The seconds between two ticks of file sensor ``sensor``: its pipeline's, or the shortest of all for
    the one sensor serving them."""
    return interval.get(sensor.removesuffix("_files"), min(interval.values()))


def through_dev(root: Path, pipelines: int, blocks: int, rows: int, timeout: float) -> dict:
    """Process ``pipelines`` x ``blocks`` demo blocks through one ``calmops dev``; its figures."""
    from dagster import DagsterInstance, DagsterRunStatus

    from calmops_dagster.interfaces.demo import drop, load_demo
    from calmops_dagster.spec import load_spec
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome.from_env(root / f"home_{pipelines}")
    names = make_home(home.root, pipelines, blocks, rows, initial=0)
    demos = [load_demo(home, name) for name in names]
    interval = {name: load_spec(home.spec_path(name)).sensor.interval_seconds for name in names}
    env = {**os.environ, "CALMOPS_HOME": str(home.root), "PYTHONPATH": str(ROOT)}
    port, figures = free_port(), {"pipelines": pipelines, "blocks": pipelines * blocks}
    started = time.time()
    log_path = root / f"dagster_dev_{pipelines}.log"
    with live_dev([*CALMOPS, "dev", "--port", str(port)], env, log_path, port) as memory:
        figures["to webserver"] = time.time() - started
        instance = DagsterInstance.from_config(str(home.dagster_home))
        states = wait_for(lambda: file_sensor_states(instance, names), 900, "a tick of every file sensor")
        figures["to sensors"] = time.time() - started
        print(f"  {pipelines} pipelines: webserver up {figures['to webserver']:.0f} s, every file sensor "
              f"ticked {figures['to sensors']:.0f} s after `calmops dev` started; dropping "
              f"{figures['blocks']} block files; {load()}", flush=True)
        first_drop = time.time()
        for demo in demos:
            for file in demo.files:
                drop(file, demo.data_dir)
        records = wait_for_runs(instance, figures["blocks"], first_drop, timeout)
        memory.sample()
        last_end = max(record.end_time for record in records)
        figures["wall"] = last_end - first_drop
        figures["run"] = statistics.median(r.end_time - r.start_time for r in records if r.start_time)
        figures["failed"] = sum(r.dagster_run.status != DagsterRunStatus.SUCCESS for r in records)
        durations, lateness = [], []
        for state in states:
            ticks = sorted(instance.get_ticks(state.instigator_origin_id, state.selector_id, after=first_drop,
                                              before=last_end), key=lambda tick: tick.timestamp)
            durations += [t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp is not None]
            lateness += [b.timestamp - a.timestamp - sensor_interval(state.instigator_name, interval)
                         for a, b in itertools.pairwise(ticks)]
        figures["tick"], figures["late"] = durations, lateness
        figures["memory"] = memory
        instance.dispose()
    figures["lost"] = lost_rows(home.root, names, blocks)
    return figures


def idle_memory(root: Path, pipelines: int, ticks: int) -> dict:
    """Memory of one ``calmops dev`` serving ``pipelines`` idle demo pipelines (specs, no block files) until
    every file sensor has ticked ``ticks`` times; its figures: start-up seconds and :class:`GroupMemory`."""
    from dagster import DagsterInstance

    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome.from_env(root / f"idle_{pipelines}")
    names = make_home(home.root, pipelines, blocks=1, rows=200, initial=0)
    env = {**os.environ, "CALMOPS_HOME": str(home.root), "PYTHONPATH": str(ROOT)}
    port, started = free_port(), time.time()
    log_path = root / f"dagster_dev_idle_{pipelines}.log"
    with live_dev([*CALMOPS, "dev", "--port", str(port)], env, log_path, port) as memory:
        instance = DagsterInstance.from_config(str(home.dagster_home))
        wait_for(lambda: file_sensor_states(instance, names), 900, "a tick of every file sensor", 2.0)
        first_ticks = time.time() - started
        wait_for(lambda: file_sensor_states(instance, names, ticks), 900, f"{ticks} ticks of every file sensor",
                 2.0)
        memory.sample()
        instance.dispose()
    return {"pipelines": pipelines, "start": first_ticks, "settled": time.time() - started, "memory": memory}


def report_idle(sizes: list[dict], ticks: int) -> None:
    base, top = sizes[0], sizes[-1]
    print(f"\nidle pipelines through one dagster dev, peaks until every file sensor ticked {ticks} times; MB; "
          f"{load()}")
    roles = sorted({name for f in sizes for name in f["memory"].roles})
    print(f"{'pipelines':>9} {'first ticks s':>13} {'RSS sum':>8} {'PSS sum':>8} {'procs':>5}  "
          + "  ".join(f"{name + ' RSS/PSS':>24}" for name in roles))
    for f in sizes:
        m = f["memory"]
        per_role = [m.roles.get(name, [0, 0, 0]) for name in roles]
        print(f"{f['pipelines']:9} {f['start']:13.0f} {m.rss_sum / 1024:8.0f} {m.pss_sum / 1024:8.0f} "
              f"{m.processes:5}  " + "  ".join(f"{r / 1024:11.0f}/{p / 1024:<12.0f}" for r, p, _ in per_role))
    if top is base:
        return
    added = top["pipelines"] - base["pipelines"]
    print(f"per added pipeline ({base['pipelines']} -> {top['pipelines']}): "
          f"RSS sum {(top['memory'].rss_sum - base['memory'].rss_sum) / 1024 / added:.2f} MB, "
          f"PSS sum {(top['memory'].pss_sum - base['memory'].pss_sum) / 1024 / added:.2f} MB; by role (RSS): "
          + ", ".join(f"{name} {_role_growth(base, top, name) / added:.2f}" for name in roles))


def _role_growth(base: dict, top: dict, name: str) -> float:
    """MB more summed RSS of role ``name`` at the larger size."""
    return (top["memory"].roles.get(name, [0])[0] - base["memory"].roles.get(name, [0])[0]) / 1024


def snapshot(ref: str, root: Path) -> Path:
    """The package at git revision ``ref`` under ``root``, laid out as installed (``assets/``, ``sensors/``,
    ``resources/``, ``generators/`` inside ``calmops_dagster/``), so ``PYTHONPATH`` selects it over the editable
    install."""
    target = root / f"src_{ref.replace('/', '_')}"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "calmops_dagster", "assets", "sensors",
                              "resources", "generators", "workspace.yaml"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    for folder in ("assets", "sensors", "resources", "generators"):
        (target / folder).rename(target / "calmops_dagster" / folder)
    return target


#: ``--sides``: the instance and run launcher of each side, by name.
SIDES = {"local": ("local", "warm"), "local-default": ("local", "dagster"),
         "postgres": ("postgres", "dagster"), "postgres-warm": ("postgres", "warm")}


def postgres_dagster_home(root: Path, port: int, launcher: str = "dagster") -> Path:
    """A ``DAGSTER_HOME`` whose ``dagster.yaml`` is ``deploy/dagster.yaml`` with only what cannot exist here
    swapped (as tests/test_postgres_instance.py does): Dagster's default run launcher instead of Docker's
    (``launcher="warm"``: the warm launcher), the throwaway server's port, artifact and compute-log folders
    under ``root``."""
    import yaml

    raw = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    raw["run_launcher"] = ({"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
                           if launcher == "dagster" else
                           {"module": "calmops_dagster.speedups.warm_run_launcher", "class": "WarmRunLauncher"})
    raw["storage"]["postgres"]["postgres_db"]["port"] = port
    raw["local_artifact_storage"]["config"]["base_dir"] = str(root / "artifacts")
    raw["compute_logs"]["config"]["base_dir"] = str(root / "compute_logs")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(raw))
    return dagster_home


def arrivals_through_dev(root: Path, ref: str, pipelines: int, blocks: int, rows: int, every: float,
                         drain: float, postgres=None, timeout: float = 900, launcher: str = "") -> dict:
    """Arrivals of ``blocks`` blocks per pipeline through one ``dagster dev`` of revision ``ref``; its figures
    (see the module's docstring). ``every`` > 0: steady, staggered, then ``drain`` seconds; ``every`` = 0: a
    burst, then until every block's run has finished (at most ``timeout`` s). ``postgres``: a running
    :class:`PostgresServer` for the instance of ``deploy/dagster.yaml``; else the local instance.
    ``launcher``: ``warm`` or ``dagster`` (default: the local instance's own, Dagster's on Postgres)."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.scheduler.instigation import InstigatorType

    from calmops_dagster.interfaces.demo import drop, load_demo
    from calmops_dagster.spec import load_spec
    from calmops_dagster.store.paths import CalmOpsHome

    launcher = launcher or ("dagster" if postgres else "warm")
    label = f"{ref} {'postgres' if postgres else 'local'} {launcher}"
    side = root / label.replace("/", "_").replace(" ", "_")
    source = snapshot(ref, side)
    home = CalmOpsHome.from_env(side / "home")
    names = make_home(home.root, pipelines, blocks, rows, initial=0)
    demos = dict(zip(names, (load_demo(home, name) for name in names), strict=True))
    interval = {name: load_spec(home.spec_path(name)).sensor.interval_seconds for name in names}
    env = {**os.environ, "CALMOPS_HOME": str(home.root), "PYTHONPATH": str(source)}
    port, figures = free_port(), {"ref": label, "pipelines": pipelines}
    if postgres:
        dagster_home = postgres_dagster_home(side, postgres.port, launcher)
        env |= {"DAGSTER_HOME": str(dagster_home), "DAGSTER_POSTGRES_HOST": postgres.host,
                "DAGSTER_POSTGRES_USER": postgres.user, "DAGSTER_POSTGRES_PASSWORD": "trust-auth-ignores-it",
                "DAGSTER_POSTGRES_DB": postgres.database}
        command = [sys.executable, "-m", "dagster", "dev", "-m", "calmops_dagster.definitions", "-p", str(port),
                   "--log-level", "warning"]  # calmops dev would point DAGSTER_HOME at the local instance
    else:
        env["CALMOPS_RUN_LAUNCHER"] = launcher
        dagster_home, command = home.dagster_home, [*CALMOPS, "dev", "--port", str(port)]
    started = time.time()
    with open(side / "dagster_dev.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=str(source))
    try:
        memory = GroupMemory(process.pid, every=0.5).__enter__()
        wait_for(lambda: answers_200(f"http://127.0.0.1:{port}/server_info", process, timeout=2), 900,
                 "dagster dev's webserver")
        if postgres:
            os.environ.update({key: env[key] for key in env if key.startswith("DAGSTER_POSTGRES")})
        instance = DagsterInstance.from_config(str(dagster_home))
        file_sensors = {s.instigator_name for s in wait_for(lambda: file_sensor_states(instance, names), 900,
                                                            "a tick of every file sensor")}
        states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        figures["start"] = time.time() - started
        figures["sensors"] = len(states)
        print(f"  {label}: {pipelines} pipelines, {len(states)} sensors, every file sensor ticked "
              f"{figures['start']:.0f} s after `dagster dev` started; {load()}", flush=True)
        memory.mark()
        first = time.time()
        arrivals = sorted((first + i * every / pipelines + k * every, name, k)
                          for i, name in enumerate(names) for k in range(blocks))
        landed: dict[str, dict[str, float]] = {name: {} for name in names}  # block -> landing time
        next_report = first + 30
        for due, name, k in arrivals:
            while time.time() < due:
                time.sleep(min(0.2, max(0.0, due - time.time())))
            file = demos[name].files[k]
            drop(file, demos[name].data_dir)
            landed[name][str(file.block)] = time.time()
            if time.time() > next_report:
                next_report += 30
                print(f"    {time.time() - first:6.0f} s: {sum(map(len, landed.values()))} blocks landed; "
                      f"{load()}", flush=True)
        since = RunsFilter(created_after=datetime.fromtimestamp(first, UTC))
        if every > 0:
            time.sleep(drain)
        else:
            try:
                wait_for_runs(instance, sum(map(len, landed.values())), first, timeout, since)
            except AssertionError as timed_out:  # report what was done by then
                print(f"    {timed_out}", flush=True)
        end = time.time()
        memory.sample()
        memory.__exit__()
        figures["memory"], figures["window"] = memory, end - first
        figures["cpu"], figures["load"] = memory.cpu_by_role(), (min(memory.loads), max(memory.loads))
        records = instance.get_run_records(since)
        requested = {(r.dagster_run.tags.get("calmops/pipeline"), r.dagster_run.tags.get("dagster/partition"))
                     for r in records}
        succeeded = [r for r in records if r.dagster_run.status == DagsterRunStatus.SUCCESS]
        done = {name: sorted({r.dagster_run.tags["dagster/partition"] for r in succeeded
                              if r.dagster_run.tags.get("calmops/pipeline") == name}) for name in names}
        figures["landed"] = sum(map(len, landed.values()))
        figures["requested"] = len(requested)
        figures["succeeded"] = len(succeeded)
        figures["failed"] = sum(r.dagster_run.status == DagsterRunStatus.FAILURE for r in records)
        figures["done per pipeline"] = [len(done[name]) for name in names]
        figures["spread"] = spread_over_time(succeeded, names, first, end)
        figures["fairness"] = fairness(records, landed)
        figures["to report"] = []  # landing -> the block's drift_report materialization, seconds
        for name in names:
            for event in instance.fetch_materializations(AssetKey([name, "drift_report"]), limit=10 * blocks).records:
                if event.partition_key in landed[name]:
                    figures["to report"].append(event.timestamp - landed[name][event.partition_key])
        unrequested = sum((name, block) not in requested for name in names for block in landed[name])
        durations, lateness, work, counts = [], [], 0.0, []
        for state in states:
            ticks = sorted(instance.get_ticks(state.instigator_origin_id, state.selector_id, after=first,
                                              before=end), key=lambda tick: tick.timestamp)
            spent = [t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp is not None]
            work += sum(spent)
            if state.instigator_name in file_sensors:
                durations += spent
                counts.append(len(ticks))
                lateness += [b.timestamp - a.timestamp - sensor_interval(state.instigator_name, interval)
                             for a, b in itertools.pairwise(ticks)]
        figures["tick"], figures["late"], figures["ticks"] = durations, lateness, counts
        figures["sensor work"] = work / (end - first) * 60
        instance.dispose()
    finally:
        stop_group(process, timeout=60)
    figures["unrequested"], figures["lost"] = unrequested, lost_done_rows(home.root, done)
    return figures


def spread_over_time(succeeded: list, names: list[str], first: float, end: float, step: float = 60) -> list:
    """Blocks done per pipeline (min, median, max) every ``step`` seconds from ``first`` to ``end``."""
    ends = {name: sorted(r.end_time for r in succeeded if r.dagster_run.tags.get("calmops/pipeline") == name)
            for name in names}
    rows = []
    for mark in [*range(int(step), int(end - first), int(step)), end - first]:
        counts = [sum(t <= first + mark for t in ends[name]) for name in names]
        rows.append((mark, min(counts), statistics.median(counts), max(counts)))
    return rows


def fairness(records: list, landed: dict[str, dict[str, float]]) -> dict:
    """The fair queue's rule, checked on the runs' start times: every pipeline's first pending block starts
    before any pipeline's third. ``first`` / ``third``: the latest first start and the earliest third start
    (seconds from the first landing); ``late``: pipelines whose first block started (or had not started by
    the end) after some pipeline's third block started."""
    started: dict[tuple[str, str], float] = {}
    for r in records:
        key = (r.dagster_run.tags.get("calmops/pipeline"), r.dagster_run.tags.get("dagster/partition"))
        if r.start_time is not None:
            started[key] = min(started.get(key, r.start_time), r.start_time)
    origin = min(t for blocks in landed.values() for t in blocks.values())
    firsts, thirds = {}, []
    for name, blocks in landed.items():
        order = sorted(blocks, key=lambda block: (blocks[block], block))
        firsts[name] = started.get((name, order[0]), float("inf")) if order else float("-inf")
        if len(order) >= 3 and (name, order[2]) in started:
            thirds.append(started[(name, order[2])])
    earliest_third = min(thirds, default=float("inf"))
    late = sum(start > earliest_third for start in firsts.values())
    return {"first": max(firsts.values()) - origin, "third": earliest_third - origin, "late": late}


def lost_done_rows(home: Path, done: dict[str, list[str]]) -> int:
    """Blocks a successful run processed whose rows are missing from, or doubled in, the metric tables."""
    from calmops_dagster.store.metrics_store import MetricsStore

    store, lost = MetricsStore(home / "metrics.duckdb"), 0
    for table in ("blocks", "drift_summary", "promotions"):
        frame = store.query(f"SELECT pipeline, block, count(*) AS n FROM {table} GROUP BY ALL")
        counts = {(row.pipeline, str(row.block)): int(row.n) for row in frame.itertuples()}
        lost += sum(counts.get((name, block), 0) != 1 for name, blocks in done.items() for block in blocks)
    return lost


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return (f"{statistics.median(ordered):.1f} / {ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]:.1f}"
            f" / {ordered[-1]:.1f}")


def report_arrivals(sides: list[dict], blocks: int, rows: int, every: float, drain: float) -> None:
    pattern = (f"one every {every:.0f} s per pipeline (staggered), then {drain:.0f} s" if every > 0 else
               "all at once (a burst), until every run finished")
    print(f"\narrivals through one dagster dev per side: {sides[0]['pipelines']} demo pipelines, "
          f"{blocks} blocks x {rows} rows each, {pattern}; {load()}")
    print(f"{'side':>16} {'sensors':>7} {'start s':>7} {'window s':>8} {'tick s/min':>10} {'ticks':>5} "
          f"{'tick s med/p95/max':>19} {'late s med/p95/max':>19} {'to report s med/p95/max':>23} "
          f"{'landed':>6} {'requested':>9} {'done':>5} {'failed':>6} {'done/pipeline min/med/max':>25} "
          f"{'>=1 done':>8} {'unrequested':>11} {'lost':>4} {'PSS MB':>6}")
    for f in sides:
        per = f["done per pipeline"]
        spread = f"{min(per)} / {statistics.median(per):.0f} / {max(per)}"
        print(f"{f['ref']:>16} {f['sensors']:7} {f['start']:7.0f} {f['window']:8.0f} {f['sensor work']:10.0f} "
              f"{statistics.median(f['ticks']):5.0f} {_quantiles(f['tick']):>19} {_quantiles(f['late']):>19} "
              f"{_quantiles(f['to report']):>23} {f['landed']:6} {f['requested']:9} {f['succeeded']:5} "
              f"{f['failed']:6} {spread:>25} {sum(n > 0 for n in per) / len(per):8.0%} {f['unrequested']:11} "
              f"{f['lost']:4} {f['memory'].pss_sum / 1024:6.0f}")
    for f in sides:
        cpu, done = f["cpu"], max(f["succeeded"], 1)
        print(f"  {f['ref']}: {f['succeeded'] / f['window'] * 60:.1f} blocks/min, {sum(cpu.values()) / done:.1f} CPU s "
              f"per block done (dagster dev's group, the window's), by role: "
              + ", ".join(f"{name} {seconds / done:.2f}" for name, seconds in sorted(cpu.items(), key=lambda i: -i[1]))
              + f"; load average (1 min) in the window {f['load'][0]:.1f}-{f['load'][1]:.1f}")
    for f in sides:
        fair = f["fairness"]
        print(f"  {f['ref']}: fair queue rule (every pipeline's first block starts before any pipeline's third): "
              f"{'kept' if not fair['late'] else 'BROKEN'}; last first block started {fair['first']:.0f} s, "
              f"earliest third {fair['third']:.0f} s after the first landing; {fair['late']} pipelines late")
        print(f"  {f['ref']}: blocks done per pipeline (min / median / max) over time: "
              + ", ".join(f"{t:.0f} s {lo}/{med:g}/{hi}" for t, lo, med, hi in f["spread"]))
        print(f"  {f['ref']}: peak memory by role, RSS/PSS MB (most processes): "
              + ", ".join(f"{name} {rss / 1024:.0f}/{pss / 1024:.0f} ({n})"
                          for name, (rss, pss, n) in sorted(f["memory"].roles.items())))


def wait_for_runs(instance, expected: int, since: float, timeout: float, runs=None) -> list:
    """Wait until ``expected`` runs (of those ``runs``, a ``RunsFilter``, selects) have finished and none is
    queued or running; their records. Prints the progress every 30 s."""
    from dagster import DagsterRunStatus, RunsFilter

    after = runs.created_after if runs else None
    finished = RunsFilter(statuses=[DagsterRunStatus[status] for status in FINISHED], created_after=after)
    pending = RunsFilter(statuses=[s for s in DagsterRunStatus if s.value not in FINISHED], created_after=after)
    deadline, next_report = time.monotonic() + timeout, time.monotonic() + 30
    while True:
        done, waiting = instance.get_runs_count(finished), instance.get_runs_count(pending)
        if done >= expected and not waiting:
            return instance.get_run_records(finished)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s: {done} of {expected} runs finished")
        if time.monotonic() > next_report:
            next_report += 30
            print(f"    {time.time() - since:6.0f} s: {done}/{expected} runs finished, {waiting} queued or "
                  f"running; {load()}", flush=True)
        time.sleep(1.0)


def load() -> str:
    """The machine's load average (1, 5, 15 min), printed beside the figures: the machine may be shared."""
    return "load " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def _median_max(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (float("nan"), float("nan"))


DEV_HEADER = (f"{'pipelines':>9} {'blocks':>6} {'start s':>7} {'wall s':>7} {'blocks/min':>10} {'run s':>6} "
              f"{'tick s med/max':>14} {'late s med/max':>14} {'RSS sum':>8} {'PSS sum':>8} {'largest':>8} "
              f"{'procs':>5} {'failed':>6} {'rows lost':>9}")


def dev_row(f: dict) -> str:
    """One size's figures under :data:`DEV_HEADER` (memory in MB)."""
    memory, tick, late = f["memory"], _median_max(f["tick"]), _median_max(f["late"])
    return (f"{f['pipelines']:9} {f['blocks']:6} {f['to sensors']:7.0f} {f['wall']:7.1f} "
            f"{f['blocks'] / f['wall'] * 60:10.1f} {f['run']:6.1f} {tick[0]:6.2f}/{tick[1]:<7.2f} "
            f"{late[0]:6.1f}/{late[1]:<7.1f} {memory.rss_sum / 1024:8.0f} {memory.pss_sum / 1024:8.0f} "
            f"{memory.largest / 1024:8.0f} {memory.processes:5} {f['failed']:6} {f['lost']:9}")


def report_dev(sizes: list[dict], blocks: int, rows: int) -> None:
    print(f"\nthrough one dagster dev: demo pipelines x {blocks} blocks x {rows} rows; seconds, MB; {load()}")
    print(DEV_HEADER)
    for f in sizes:
        print(dev_row(f))
    for f in sizes:
        print(f"  largest process at {f['pipelines']} pipelines: {f['memory'].largest_command}")
    base = sizes[0]
    print(f"\ngrowth against the baseline, {base['pipelines']} pipelines (x = ratio to it):")
    print(f"{'pipelines':>9} {'x pipelines':>11} {'x wall':>7} {'s/block':>8} {'x s/block':>9} "
          f"{'x tick med':>10} {'x late med':>10} {'PSS MB/pipeline':>15} {'x PSS sum':>9}")
    for f in sizes:
        per_block = f["wall"] / f["blocks"]
        tick, late = _median_max(f["tick"])[0], _median_max(f["late"])[0]
        base_tick, base_late = _median_max(base["tick"])[0], _median_max(base["late"])[0]
        print(f"{f['pipelines']:9} {f['pipelines'] / base['pipelines']:11.1f} {f['wall'] / base['wall']:7.2f} "
              f"{per_block:8.2f} {per_block / (base['wall'] / base['blocks']):9.2f} {_ratio(tick, base_tick):>10} "
              f"{_ratio(late, base_late):>10} {f['memory'].pss_sum / 1024 / f['pipelines']:15.0f} "
              f"{f['memory'].pss_sum / base['memory'].pss_sum:9.2f}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 else "-"


def sizes_list(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--pipelines {text!r}: expected counts such as 4 or 10,50")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=sizes_list, default=[4], help="pipeline counts, e.g. 10,50")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4, help="`calmops run` processes at once")
    parser.add_argument("--through-dev", action="store_true", help="process the blocks through one dagster dev")
    parser.add_argument("--timeout", type=float, help="--through-dev: seconds to wait for one size's runs "
                        "(default 600 + 30 per block)")
    parser.add_argument("--keep", action="store_true", help="--through-dev: keep the homes and dagster dev's logs")
    parser.add_argument("--steady", help="git revisions, e.g. c88297c,HEAD: steady arrivals through one dagster "
                        "dev of each (one size, --pipelines)")
    parser.add_argument("--every", type=float, default=90, help="--steady: seconds between a pipeline's blocks "
                        "(0: a burst, every block at once)")
    parser.add_argument("--drain", type=float, default=60, help="--steady: seconds after the last block landed")
    parser.add_argument("--burst", help="git revisions, e.g. HEAD: every pipeline receives its --blocks blocks at "
                        "once, through one dagster dev of each, until every run finished (or --timeout)")
    parser.add_argument("--postgres", action="store_true", help="--steady/--burst: each revision also on the "
                        "Postgres instance of deploy/dagster.yaml (default launcher, a throwaway PostgreSQL)")
    parser.add_argument("--sides", help="--steady/--burst: the instance and launcher of each side, of "
                        f"{', '.join(SIDES)} (default: local, and postgres with --postgres)")
    parser.add_argument("--idle-memory", action="store_true", help="memory of one dagster dev per --pipelines "
                        "size serving idle pipelines (specs, no blocks), and per added pipeline")
    parser.add_argument("--ticks", type=int, default=3, help="--idle-memory: file-sensor ticks to wait for")
    args = parser.parse_args()
    if args.idle_memory:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        root, sizes = Path(tempfile.mkdtemp(prefix="scale_bench_")), []
        print(f"homes and dagster dev logs under {root}")
        try:
            for pipelines in args.pipelines:
                sizes.append(idle_memory(root, pipelines, args.ticks))
                report_idle(sizes, args.ticks)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        return
    if args.steady or args.burst:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        every = args.every if args.steady else 0
        root, sides = Path(tempfile.mkdtemp(prefix="scale_bench_")), []
        print(f"homes and dagster dev logs under {root}")
        try:
            with contextlib.ExitStack() as stack:
                names = args.sides.split(",") if args.sides else ["local", *(["postgres"] if args.postgres else [])]
                if unknown := [name for name in names if name not in SIDES]:
                    parser.error(f"--sides {args.sides}: unknown {', '.join(unknown)}; expected {', '.join(SIDES)}")
                if any(SIDES[name][0] == "postgres" for name in names):
                    sys.path.insert(0, str(ROOT / "tests"))
                    from postgres_server import postgres_server
                for ref in (args.steady or args.burst).split(","):
                    for name in names:
                        instance, launcher = SIDES[name]
                        server = None
                        if instance == "postgres":  # a fresh database per side
                            server = stack.enter_context(postgres_server(f"bench_{len(sides)}"))
                        sides.append(arrivals_through_dev(root, ref.strip(), args.pipelines[-1], args.blocks,
                                                          args.rows, every, args.drain, server,
                                                          args.timeout or 900, launcher))
                        report_arrivals(sides, args.blocks, args.rows, every, args.drain)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        return
    if args.through_dev:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: still stop dagster dev (finally)
        root, sizes = Path(tempfile.mkdtemp(prefix="scale_bench_")), []
        print(f"homes and dagster dev logs under {root}")
        try:
            for pipelines in args.pipelines:
                timeout = args.timeout or 600 + 30 * pipelines * args.blocks
                sizes.append(through_dev(root, pipelines, args.blocks, args.rows, timeout))
                print(f"{DEV_HEADER}\n{dev_row(sizes[-1])}; {load()}", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        report_dev(sizes, args.blocks, args.rows)
        return
    for pipelines in args.pipelines:
        total = pipelines * args.blocks
        print(f"{pipelines} pipelines x {args.blocks} blocks x {args.rows} rows through one CALMOPS_HOME")
        print(f"{'mode':14} {'wall s':>7} {'blocks/min':>11} {'peak MB/run':>12} {'failed':>7} {'rows lost':>10}")
        for label, parallel in (("one at a time", 1), (f"{args.parallel} at once", args.parallel)):
            with tempfile.TemporaryDirectory() as folder:
                home = Path(folder) / "home"
                names = make_home(home, pipelines, args.blocks, args.rows, initial=args.blocks)
                wall, peak, failed = run_all(home, names, parallel)
                lost = lost_rows(home, names, args.blocks)
            print(f"{label:14} {wall:7.1f} {total / wall * 60:11.1f} {peak:12.0f} {len(failed):7} {lost:10}")


if __name__ == "__main__":
    main()
