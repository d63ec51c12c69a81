"""Typed exceptions, so callers and tests can tell one failure from another.

Every message names the thing that failed (a file, a field, a model version) and what is wrong with it.
"""


class CalmOpsError(Exception):
    """Base class of every error raised on purpose by calmops-dagster."""


class SpecError(CalmOpsError):
    """A pipeline spec (``pipeline.yaml``) is missing, malformed or invalid."""


class PipelineNameError(CalmOpsError):
    """A pipeline name that could reach outside ``CALMOPS_HOME/pipelines`` (``../x``, ``/abs``, ``a/b``)."""


class DataFileError(CalmOpsError):
    """A data file cannot be used. Subclasses say why; ``path`` names the file."""

    def __init__(self, path, message: str):
        self.path = str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


class CorruptFileError(DataFileError):
    """The file's bytes cannot be parsed as CSV or Parquet."""


class EmptyFileError(DataFileError):
    """The file parses but holds no rows."""


class SchemaError(DataFileError):
    """The file parses but its columns are not what the pipeline expects."""


class IncompleteFileError(DataFileError):
    """The file looks half-written (a truncated last line, a Parquet file without its footer): it is still
    being written, so the scan waits for it instead of quarantining it."""


class ModelIntegrityError(CalmOpsError):
    """A model file fails its hash or its format check; it is never loaded."""


class ModelVersionError(ModelIntegrityError):
    """A name that is not a model version of the pipeline (``../other/models/v0001``, ``/etc/passwd``): it is
    refused before it is joined to a path."""


class ModelKeyError(CalmOpsError):
    """The model signing key is set badly (a key file inside CALMOPS_HOME, unreadable, too short...)."""


class NoChampionError(CalmOpsError):
    """An operation needs a champion model and the pipeline has none yet."""


class StaleAssetValueError(CalmOpsError):
    """An asset value Dagster stored for a block cannot be handed to this release's steps: an earlier release
    stored it (a dict or a DataFrame where the steps now hand dataclasses, or an object of a module since
    moved). The message names the asset, the block and what to materialize again."""


class StoredRowsError(CalmOpsError):
    """A block's stored rows (``blocks/<block>.parquet``, ``predictions/<block>.parquet``) are missing or
    cannot be read when a step loads them. The message names the file and the partition to materialize again."""


class StoreUnavailableError(CalmOpsError):
    """The object store holding the pipelines' state cannot be used (unreachable, refusing access, no such
    bucket, failing with 5xx) after the client's bounded retries. The message is one line naming the store,
    its endpoint and the failure (:mod:`calmops_dagster.store.object_store`)."""


class CustomFunctionError(CalmOpsError):
    """A function of the spec's ``custom_functions`` failed: training raised and its fallback raised too (or
    there is none). The message is one line naming the function and its exception."""


class BrokerUnavailableError(CalmOpsError):
    """The Celery broker (or result backend) of a distributed run cannot be reached, before the run sent a
    step or while it waited for one. One line naming it (without credentials) and what to do; the run fails and
    its block stays pending."""


class CodeVersionError(CalmOpsError):
    """A Celery worker runs another version of the code than the code location that started the run: the step
    is refused before it reads or writes anything."""


class WorkerStorageError(CalmOpsError):
    """A Celery worker cannot write and read back the pipelines' storage (``CALMOPS_STORAGE_URL``): it refuses
    to start, so no step is ever sent to it."""
