"""The tags and run statuses that tie Dagster runs to pipelines and blocks.

Every run of a pipeline's job carries :data:`PIPELINE_TAG`; the others say which process executes a run,
whether it replaced a dead run, and which version of its block it loaded.
"""

from dagster import DagsterRunStatus

#: On every run of a pipeline's job (the job's tags): a pipeline's runs are listed by it.
PIPELINE_TAG = "calmops/pipeline"
#: Runs executed in-process by ``calmops run``, and runs of the warm run launcher, carry the host and pid of
#: their process, so a later ``calmops run`` can tell a run whose process was killed from one still going.
PID_TAG, HOST_TAG = "calmops/pid", "calmops/host"
#: Set on a run whose dead process :func:`~calmops_dagster.orchestration.dead_runs.reap_dead_runs` found and
#: marked failed.
REAPED_TAG = "calmops/reaped"
#: Set on the run the file sensor requested to replace a dead run (its run id).
RERUN_OF_TAG = "calmops/rerun_of"
#: Set by ``data_block`` on its run: the version of the block it loaded (hash of its file versions' hashes,
#: :func:`calmops_dagster.ingest.ingest_record.block_version`). A block is processed at a version when a
#: successful run carries it.
VERSION_TAG = "calmops/block_version"
#: On every run of a job that sends its steps to Celery workers (the job's tags, set by the code location):
#: the version of the code that started it (:func:`~calmops_dagster.orchestration.code_version.code_version`).
#: A worker whose code differs refuses the run's steps.
CODE_VERSION_TAG = "calmops/code_version"
#: Statuses of a run that is queued or executing.
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED]
#: Statuses of a run that is executing now (a queued run waits for the run queue, which counts ours).
EXECUTING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
