"""The alerts of a block's run (:mod:`calmops_dagster.interfaces.alerts`), told from Dagster: what a step
sends through :attr:`~calmops_dagster.steps.step_context.StepContext.alerts`, and the run-failure sensor.

Asset checks are not stored in DuckDB: the ones that failed in the run so far are read from the run's
event log, and a check about to be reported is given by the caller. The drift check is left out: its
failure is the ``drift`` event.
"""

from dagster import DagsterEventType, DagsterInstance

from calmops_dagster.interfaces.alerts import send_block_alerts
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import DRIFT_CHECK  # its failure is the ``drift`` event
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.paths import CalmOpsHome


def _metadata_text(metadata) -> str:
    """A check's metadata as ``key value, ...`` (floats to 3 significant digits)."""
    parts = []
    for key, value in (metadata or {}).items():
        value = getattr(value, "value", value)
        parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def failed_checks_of_run(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """The asset checks that failed in run ``run_id`` so far (name -> their metadata), the drift check aside."""
    failed = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if not evaluation.passed and evaluation.check_name != DRIFT_CHECK:
            failed[evaluation.check_name] = _metadata_text(evaluation.metadata)
    return failed


def alert_run(spec: PipelineSpec, home: CalmOpsHome, metrics: MetricsStore, block: str | None,
              instance: DagsterInstance, run_id: str, checks: dict[str, list[str]] | None = None, log=None) -> None:
    """Send the alerts of ``block`` processed by run ``run_id``: its recorded events, the checks that failed
    in the run and ``checks`` (a check the caller is about to report: name -> its failures). Never raises."""
    failed = {}
    try:
        failed = failed_checks_of_run(instance, run_id)
    except Exception as exc:  # noqa: BLE001 -- the event log unreadable: the other events still go out
        if log is not None:
            log.warning(f"block {block}: failed checks of run {run_id[:8]} not read for the alerts: {exc}")
    failed |= {name: "; ".join(why) for name, why in (checks or {}).items() if why}
    send_block_alerts(spec, home, metrics, block, failed, logger=log)
