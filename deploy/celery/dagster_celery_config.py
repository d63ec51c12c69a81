"""Settings of the Celery workers (``celery -A dagster_celery.app worker`` imports this module by name when it
is on ``PYTHONPATH``): the broker named by ``CALMOPS_CELERY_BROKER``, and a task acknowledged only once it
has run, so a step whose worker dies is delivered again to another worker instead of being lost."""

import os

broker_url = os.environ["CALMOPS_CELERY_BROKER"]
result_backend = os.environ.get("CALMOPS_CELERY_BACKEND") or broker_url
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
broker_connection_retry_on_startup = True
