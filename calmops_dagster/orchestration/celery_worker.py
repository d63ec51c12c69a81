"""What a Celery worker checks before it takes any step: that it can use the pipelines' storage.

Every step reads and writes the pipelines' state and the asset values passed between steps under
``CALMOPS_STORAGE_URL``. A worker that cannot (no credentials, the wrong endpoint or bucket, a policy refusing
it) would take steps from the queue and fail each of them, one run after another. ``deploy/celery``'s worker
settings run :func:`storage_refusal` when the worker starts, and the worker exits with its line instead of
listening to the queue.
"""

from __future__ import annotations

import os

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.storage import STORAGE_URL_ENV, write_atomic

#: Folder under the storage root where a starting worker writes, reads back and removes its probe object.
PROBE_DIR = "workers"


def storage_refusal(worker: str) -> str | None:
    """Why ``worker`` (its Celery node name) cannot use the pipelines' storage, in one line naming the storage
    and what to do; ``None`` when a probe object written there reads back the same and is removed."""
    where = os.environ.get(STORAGE_URL_ENV) or "CALMOPS_HOME (no CALMOPS_STORAGE_URL)"
    payload = f"calmops worker {worker} pid {os.getpid()}".encode()
    try:
        probe = CalmOpsHome.from_env().state_root / PROBE_DIR / f"{worker}.probe"
        write_atomic(probe, payload)
        if probe.read_bytes() != payload:
            raise OSError(f"{probe} read back other bytes than were written")
        probe.unlink(missing_ok=True)
    except (CalmOpsError, OSError) as exc:
        reason = " ".join(str(exc).split())
        detail = reason if where in reason else f"{where}: {reason}"  # the store's own error names it
        return (f"Celery worker {worker} cannot use the pipelines' storage ({detail}): give this "
                f"machine access to it (AWS_* credentials, endpoint, bucket policy) or correct {STORAGE_URL_ENV} "
                "the way the code location has it, then start the worker again; it took no step")
    return None
