"""The local speed-ups: the only place that uses Dagster's private API, and the switch that turns them off.

Each module makes the local instance faster by reaching into Dagster where its public API has no hook:
``sqlite_storage`` (Dagster's SQLite storages keeping their connections open), ``warm_run_launcher`` and
``warm_run_worker`` (run workers forked from a process that has imported everything), ``daemon_interval``
(the sensors' interval corrected for the daemon's loop), ``instigator_state`` (stopped sensors restarted
without loading the code location) and ``dagster_dev`` (``dagster dev`` without its supersession notice).
``docs/speedups.md`` says what each buys and what it costs at a Dagster upgrade.

``CALMOPS_DAGSTER_SPEEDUPS=0`` turns them all off: stock Dagster, only slower. The other layers import
only :func:`speedups_on` from here; they name the modules in ``dagster.yaml``, the sensors and the CLI.
May import: ``store``, ``orchestration`` (the run tags the launcher sets).
"""

from __future__ import annotations

import os

from calmops_dagster.errors import CalmOpsError

#: The environment variable that switches the speed-ups: ``1`` (the default) or ``0`` (stock Dagster).
SWITCH = "CALMOPS_DAGSTER_SPEEDUPS"


def speedups_on() -> bool:
    """Whether the speed-ups are on (``CALMOPS_DAGSTER_SPEEDUPS`` unset, empty or ``1``; ``0``: off)."""
    value = os.environ.get(SWITCH, "").strip() or "1"
    if value not in ("0", "1"):
        raise CalmOpsError(f"{SWITCH}={value!r}: expected 1 (the speed-ups on, the default) or 0 (stock Dagster)")
    return value == "1"
