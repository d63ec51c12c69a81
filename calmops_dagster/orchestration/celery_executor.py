"""Dagster's Celery executor with its faults named: the broker checked before a run sends a step, a broker lost
while the run waits on its steps reported as such, and a step refused by a worker running other code
(:mod:`~calmops_dagster.orchestration.code_version`) failing the run with the worker's line.

Stock ``celery_executor`` on an unreachable Redis retries each send for about 20 s, then fails the run with
"Retry limit exceeded while trying to reconnect to the Celery result store backend"; a broker that goes away
mid-run fails it with ``redis.exceptions.ConnectionError`` and a stack. Here both are one line naming the
broker (without its credentials), the run's pipeline and block, and what to do. The run fails, so its block is
not marked done and stays pending (``calmops run NAME`` or a re-execution from the UI processes it).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from dagster import (
    DagsterEventType,
    DagsterSubprocessError,
    Executor,
    executor,
    multiple_process_executor_requirements,
)
from dagster_celery import celery_executor
from dagster_celery.executor import CELERY_CONFIG
from kombu import Connection

from calmops_dagster.errors import BrokerUnavailableError, CodeVersionError
from calmops_dagster.orchestration.pipeline_defs import CELERY_BACKEND_ENV, CELERY_BROKER_ENV
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG

#: How long a reachability check tries (attempts of a connection each), so a broker restarting is waited for.
CHECK_ATTEMPTS, CHECK_INTERVAL_SECONDS = 3, 1.0


def without_credentials(url: str) -> str:
    """``url`` with its user and password removed, to be shown in errors and logs.

    >>> without_credentials("redis://:s3cret@redis.internal:6379/0")
    'redis://redis.internal:6379/0'
    >>> without_credentials("amqp://guest:guest@rabbit//")
    'amqp://rabbit//'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def unreachable(url: str) -> str | None:
    """Why the broker at ``url`` cannot be connected to after :data:`CHECK_ATTEMPTS` tries (one line), or
    ``None`` when a connection opens."""
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=CHECK_ATTEMPTS - 1, interval_start=CHECK_INTERVAL_SECONDS,
                                         interval_step=0, interval_max=CHECK_INTERVAL_SECONDS)
    except Exception as exc:  # noqa: BLE001 -- whatever the transport raises, the broker is not usable
        reason = " ".join(str(exc).split()) or type(exc).__name__
        password = urlsplit(url).password
        return reason.replace(password, "***") if password else reason
    return None


def checked_urls(broker: str, backend: str | None) -> dict[str, str]:
    """The parts a run needs connected, by name: the broker, and the result backend when it is another Redis.

    >>> checked_urls("redis://a:6379/0", "redis://a:6379/0")
    {'broker': 'redis://a:6379/0'}
    >>> checked_urls("redis://a:6379/0", "redis://b:6379/1")
    {'broker': 'redis://a:6379/0', 'result backend': 'redis://b:6379/1'}
    """
    urls = {"broker": broker}
    if backend and backend != broker and urlsplit(backend).scheme in ("redis", "rediss"):
        urls["result backend"] = backend
    return urls


#: The setting that names each part checked by :func:`checked_urls`.
SETTING = {"broker": CELERY_BROKER_ENV, "result backend": CELERY_BACKEND_ENV}


def refused_by_worker(instance, run_id: str) -> str | None:
    """The :class:`~calmops_dagster.errors.CodeVersionError` line a worker refused a step of run ``run_id`` with,
    so the run fails with it rather than with Dagster's wrappers. (Celery's result carries only the outer
    exception; the worker wrote the whole error with the step's resource failure to the instance.)"""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.RESOURCE_INIT_FAILURE):
        error = getattr(record.dagster_event.event_specific_data, "error", None)
        found = error and re.search(rf"{CodeVersionError.__name__}: (.+)", error.to_string())
        if found:
            return found.group(1).strip()
    return None


class CheckedCeleryExecutor(Executor):
    """Dagster's Celery executor (``celery``, the one ``celery_executor`` makes) that checks its broker before
    the first step and names it when it fails mid-run. Dagster's Celery loop asks the run's executor for the
    Celery app's settings and the retry mode: they are the wrapped executor's."""

    def __init__(self, celery):
        self.celery = celery
        self.broker, self.backend = celery.broker, celery.backend

    @property
    def retries(self):
        return self.celery.retries

    def app_args(self):
        return self.celery.app_args()

    def execute(self, plan_context, execution_plan):
        tags = plan_context.dagster_run.tags
        where = f"pipeline {tags.get(PIPELINE_TAG, '?')} block {tags.get('dagster/partition', '?')}"
        for part, url in checked_urls(self.broker, self.backend).items():
            reason = unreachable(url)
            if reason:
                raise BrokerUnavailableError(
                    f"Celery {part} {without_credentials(url)} is unreachable ({reason}): start it or correct "
                    f"{SETTING[part]}; no step was sent, {where} stays pending")
        try:
            yield from self.celery.execute(plan_context, execution_plan)
        except DagsterSubprocessError as exc:  # a step's task failed on its worker
            refusal = refused_by_worker(plan_context.instance, plan_context.dagster_run.run_id)
            if refusal:
                raise CodeVersionError(refusal) from exc
            raise
        except Exception as exc:
            lost = [(part, url, reason) for part, url in checked_urls(self.broker, self.backend).items()
                    if (reason := unreachable(url))]
            if not lost:
                raise
            part, url, reason = lost[0]
            raise BrokerUnavailableError(
                f"Celery {part} {without_credentials(url)} became unreachable mid-run ({reason}): start it again, "
                f"then re-execute this run or `calmops run {tags.get(PIPELINE_TAG, 'NAME')}`; steps that finished "
                f"keep their results, {where} is not marked done") from exc


@executor(name="celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements())
def checked_celery_executor(init_context):
    """Dagster's ``celery_executor`` (same configuration) inside :class:`CheckedCeleryExecutor`."""
    return CheckedCeleryExecutor(celery_executor.executor_creation_fn(init_context))
