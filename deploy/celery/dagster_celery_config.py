"""Settings of the Celery workers (``celery -A dagster_celery.app worker`` imports this module by name when it
is on ``PYTHONPATH``): the broker named by ``CALMOPS_CELERY_BROKER``, and a task acknowledged only once it
has run, so a step whose worker dies is delivered again to another worker instead of being lost.

A worker that cannot write and read back the pipelines' storage exits when it starts, with one line naming
the storage and what to do (:mod:`calmops_dagster.orchestration.celery_worker`), instead of taking steps it
would fail."""

import os
import sys

from celery.signals import celeryd_init

from calmops_dagster.orchestration.celery_worker import storage_refusal

broker_url = os.environ.get("CALMOPS_CELERY_BROKER") or sys.exit(
    "CALMOPS_CELERY_BROKER is not set: set it to the broker URL of the code location (redis://host:6379/0)")
result_backend = os.environ.get("CALMOPS_CELERY_BACKEND") or broker_url
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
broker_connection_retry_on_startup = True


@celeryd_init.connect
def refuse_to_start_without_storage(sender=None, **_):
    refusal = storage_refusal(str(sender))
    if refusal:
        raise SystemExit(refusal)  # Celery logs and ignores a handler's exceptions, not SystemExit
