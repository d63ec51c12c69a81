"""The pipeline spec: ``CALMOPS_HOME/pipelines/<name>/pipeline.yaml``.

The successor of CalmOps' ``runner_config.json``. It is validated on load: an unknown key, a wrong type or a
missing field raises :class:`SpecError` naming the file and the field, e.g.
``pipelines/demo/pipeline.yaml: field 'performance.thresholds': Input should be a valid dictionary``.

A minimal spec::

    name: demo
    type: block
    data_dir: data            # relative paths are resolved against the spec's folder
    target: y
    block_col: block
    model_spec:
      module: sklearn.ensemble
      class: RandomForestClassifier
      params: {n_estimators: 100, random_state: 0}
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.errors import PipelineNameError, SpecError
from calmops_dagster.store.atomic import write_text_atomic
from calmops_dagster.store.paths import check_pipeline_name

if TYPE_CHECKING:  # pandas only where frames are looked at: reading a spec must stay cheap
    import pandas as pd

#: Modules a ``model_spec`` may name, as full dotted paths (the module itself or anything below it), unless it
#: sets ``allow_any_module: true``. ``calmops_dagster`` is trusted only where its estimators live: its learning
#: layer and the documented path of IPIP, not its CLI, tutorials or generators.
TRUSTED_MODEL_MODULES = ("sklearn", "lightgbm", "river", "calmops_dagster.learning", "calmops_dagster.ipip")
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: What a pipeline can alert about (``alerts.events``; every one by default). See docs/alerts.md.
ALERT_EVENTS = ("drift", "promotion", "rollback", "breaker_open", "check_failed", "estimated_drop")
#: A webhook given as one environment variable, ``${NAME}``: the URL (it may hold a token) stays out of the spec.
ENV_WEBHOOK = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_trusted_module(module: str) -> bool:
    """Whether ``module`` is one of :data:`TRUSTED_MODEL_MODULES` or lies below one (``sklearn.ensemble``)."""
    return any(module == root or module.startswith(root + ".") for root in TRUSTED_MODEL_MODULES)



def import_named_module(module: str, missing_hint: str = ""):
    """``module``, a name a user wrote in a spec (its trust checked by the caller), imported; ``ValueError`` (one
    line) when it cannot be found or raises while it is imported."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"cannot import module '{module}': {exc}") from None
    if found is None:
        raise ValueError(f"cannot import module '{module}': no such module{missing_hint}")
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 -- a user's module may raise anything while it is imported
        raise ValueError(f"cannot import module '{module}': {type(exc).__name__}: {exc}") from None

def resolve_estimator_class(module: str, class_name: str, allow_any_module: bool = False) -> type:
    """The estimator class ``module.class_name``, refused with a :class:`ValueError` saying why.

    The allow-list is checked on the names first and the module is located with
    :func:`importlib.util.find_spec` before it is imported, so a module outside the list is never imported
    (with ``allow_any_module`` the user opted in to importing it). The class must be defined in a trusted
    module too (a trusted module re-exporting ``subprocess.Popen`` does not make it an estimator) and look like
    one (``fit``, or river's ``learn_one``). Nothing is instantiated here.
    """
    if not _DOTTED.fullmatch(module):
        raise ValueError(f"module '{module}' is not a dotted module path")
    if not _IDENTIFIER.fullmatch(class_name):
        raise ValueError(f"class '{class_name}' is not a public class name")
    if not allow_any_module and not is_trusted_module(module):
        raise ValueError(f"module '{module}' is not in the trusted modules "
                         f"{[m + '.*' for m in TRUSTED_MODEL_MODULES]}; set model_spec.allow_any_module: true "
                         "to import it anyway")
    loaded = import_named_module(module)
    cls = getattr(loaded, class_name, None)
    if not isinstance(cls, type):
        # pydantic validators report ValueError as a field error; TypeError would escape as a crash
        raise ValueError(f"module '{module}' has no class '{class_name}'")  # noqa: TRY004
    if not allow_any_module and not is_trusted_module(cls.__module__):
        raise ValueError(f"'{module}.{class_name}' is {cls.__module__}.{cls.__qualname__}, defined outside the "
                         "trusted modules; set model_spec.allow_any_module: true to use it anyway")
    if not (hasattr(cls, "fit") or hasattr(cls, "learn_one")):
        raise ValueError(f"'{module}.{class_name}' is not an estimator (it has neither fit nor learn_one)")
    return cls


def _imports_models(info: ValidationInfo) -> bool:
    """Whether this validation imports the model's module (the default), or only checks its name against the
    allow-list and that its package is installed (``load_spec(..., import_model=False)``: quick reads such as
    ``calmops list``)."""
    return (info.context or {}).get("import_model", True)


class StrictModel(BaseModel):
    """Base of every spec section: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelSpec(StrictModel):
    """Which estimator to train: ``{module, class, params}``, as in CalmOps."""

    module: str
    class_name: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    allow_any_module: bool = False
    """Opt-in to import from a module outside :data:`TRUSTED_MODEL_MODULES`."""

    @model_validator(mode="after")
    def _trusted_estimator_class(self, info: ValidationInfo) -> ModelSpec:
        if _imports_models(info):
            resolve_estimator_class(self.module, self.class_name, self.allow_any_module)
            return self
        if not _DOTTED.fullmatch(self.module) or not _IDENTIFIER.fullmatch(self.class_name):
            raise ValueError(f"'{self.module}.{self.class_name}' is not a dotted module path and a class name")
        if not self.allow_any_module and not is_trusted_module(self.module):
            raise ValueError(f"module '{self.module}' is not in the trusted modules "
                             f"{[m + '.*' for m in TRUSTED_MODEL_MODULES]}")
        root = self.module.split(".")[0]
        if importlib.util.find_spec(root) is None:
            raise ValueError(f"cannot import module '{self.module}': no package '{root}' is installed")
        return self

    @property
    def estimator_class(self) -> type:
        return resolve_estimator_class(self.module, self.class_name, self.allow_any_module)

    @property
    def is_river(self) -> bool:
        return self.module.split(".")[0] == "river"

    def make_estimator(self):
        """A new instance with ``params``; river models are wrapped into sklearn estimators by
        :mod:`calmops_dagster.learning.river_models` (``partial_fit`` calls river's ``learn_many``/``learn_one``).
        Only training builds one: validating or listing a spec never instantiates the class."""
        estimator = self.estimator_class(**self.params)
        if self.is_river:
            from calmops_dagster.learning.river_models import wrap_river

            return wrap_river(estimator)
        return estimator

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.class_name}"


class PerformanceConfig(StrictModel):
    """How models are scored and when performance calls for a new model."""

    metric: str | None = None
    """Primary metric; default ``balanced_accuracy`` for classifiers, ``rmse`` for regressors."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Absolute bars a champion must meet: minimum for scores (accuracy...), maximum for errors (rmse...)."""
    max_relative_drop: float = Field(0.10, ge=0, le=1)
    """A drop of the primary metric by more than this share of the champion's reference value calls for
    retraining."""
    min_improvement: float = Field(0.0, ge=0)
    """A challenger must beat the champion's primary metric by more than this to be promoted."""
    eval_fraction: float = Field(0.3, gt=0, lt=1)
    """Share of a block held out (stratified for classifiers) to score challenger and champion alike."""
    alpha: float = Field(0.05, gt=0, lt=1)
    """Significance level of the promotion test (McNemar for classifiers, paired bootstrap otherwise)."""
    n_bootstrap: int = Field(1000, ge=100)
    """Resamples of the paired bootstrap."""
    rollback_drop: float = Field(0.30, gt=0, le=1)
    """A champion worse than its reference by more than this share is rolled back to a previous champion
    that does better on the block (CalmOps: 30%)."""


class PromotionConfig(StrictModel):
    """What may move the champion besides the evidence of :class:`PerformanceConfig`."""

    allow_late_promotion: bool = False
    """Let a late block (older, in event order, than a block already processed) promote its challenger over
    a champion trained on newer data. Off by default: the champion only moves forward in event time, so old
    data copied in late never turns production back to an old concept. Late blocks never trigger an
    automatic rollback either way."""


class RetrainConfig(StrictModel):
    """Parameters of the retrain modes (``retrain_mode``)."""

    window_blocks: int = Field(3, ge=1)
    """``window``: train on the last N blocks (the current one included)."""
    window_rows: int | None = Field(None, ge=10)
    """``window``: train on the last N rows instead (overrides ``window_blocks``)."""
    replay_fraction: float = Field(0.4, gt=0, lt=1)
    """``replay_mix``: share of the training rows replayed (stratified) from earlier blocks."""
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    """``recalibration``: calibration method of the champion's probabilities."""


class CustomFunctionsConfig(StrictModel):
    """The user's own training code, named ``module.path:function`` (each optional).

    ``train(X, y, context)`` builds the first champion and every challenger unless ``retrain(champion, X, y,
    context)`` is given for challengers; ``fallback(error, X, y, context)`` runs when training raises and
    returns a model or ``None`` (no challenger). Each is imported only from ``allow_modules``
    (:mod:`calmops_dagster.learning.custom_functions`)."""

    allow_modules: list[str] = Field(default_factory=list)
    """The modules (and the modules below them) the functions may be imported from."""
    train: str | None = None
    retrain: str | None = None
    fallback: str | None = None

    @field_validator("allow_modules")
    @classmethod
    def _dotted_modules(cls, value: list[str]) -> list[str]:
        from calmops_dagster.learning.custom_functions import check_allow_modules

        return check_allow_modules(value)

    @field_validator("train", "retrain", "fallback")
    @classmethod
    def _trusted_function(cls, value: str | None, info: ValidationInfo) -> str | None:
        from calmops_dagster.learning.custom_functions import resolve_function, split_path

        allowed = info.data.get("allow_modules")
        if value is None or allowed is None:  # allow_modules itself failed: reported there
            return value
        if _imports_models(info):
            resolve_function(info.field_name, value, allowed)
            return value
        module, _ = split_path(value, allowed)
        root = module.split(".")[0]
        if importlib.util.find_spec(root) is None:
            raise ValueError(f"cannot import module '{module}': no package '{root}' is installed")
        return value

    @property
    def trains(self) -> bool:
        """Whether a user function trains models (``train`` or ``retrain``)."""
        return self.train is not None or self.retrain is not None

    def function(self, role: str):
        """The function of ``role`` (``train``, ``retrain``, ``fallback``), resolved and checked again."""
        from calmops_dagster.learning.custom_functions import resolve_function

        return resolve_function(role, getattr(self, role), self.allow_modules)


#: The retrain modes that only choose the rows a custom function learns from.
CUSTOM_FUNCTION_MODES = ("full", "window", "replay_mix")


class ScheduleConfig(StrictModel):
    """``{type: cron, params: {cron: "0 * * * *"}}`` or ``{type: interval, params: {minutes: 10}}``."""

    type: Literal["cron", "interval"]
    params: dict[str, Any]

    @model_validator(mode="after")
    def _params_match_type(self) -> ScheduleConfig:
        if self.type == "cron":
            if set(self.params) != {"cron"} or not _dagster_accepts_cron(str(self.params["cron"])):
                raise ValueError("a cron schedule needs params {cron: '<valid cron string>'}")
        else:
            units = {"minutes", "hours", "days"}
            if len(self.params) != 1 or not set(self.params) <= units:
                raise ValueError(f"an interval schedule needs exactly one of {sorted(units)} in params")
            (value,) = self.params.values()
            if not isinstance(value, int) or value <= 0:
                raise ValueError("an interval must be a positive integer")
        return self


def _dagster_accepts_cron(cron: str) -> bool:
    """Whether Dagster takes ``cron`` as a schedule's cron string: its public ``ScheduleDefinition`` checks
    it (five fields, values in range, a date that exists) as it will when the schedule is built."""
    import dagster as dg

    try:
        dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


class CircuitBreakerConfig(StrictModel):
    """Pause retraining after ``max_failures`` consecutive failures, for ``backoff_minutes``."""

    max_failures: int = Field(3, ge=1)
    backoff_minutes: int = Field(120, ge=1)


class SensorConfig(StrictModel):
    """How the file sensor (``calmops_files``, one for every pipeline) polls ``data_dir``."""

    enabled: bool = True
    """Whether the file sensor looks at this pipeline's ``data_dir``; ``false`` pauses this pipeline only
    (``calmops run`` and the schedule still ingest it). Takes effect when the code location reloads."""
    interval_seconds: int = Field(15, ge=1)
    """Seconds between two looks at ``data_dir``. Dagster's sensor daemon looks at sensors every 5 s, so the
    interval is rounded up to a multiple of 5 s (1-5 s: every 5 s; 7 s: every 10 s)."""
    settle_seconds: float = Field(5.0, ge=0)
    """A file is read only once its modification time is at least this old and its size has not changed
    since the previous look (a file still being copied is not read)."""
    incomplete_wait_seconds: float = Field(600.0, ge=0)
    """A settled file that looks half-written (a CSV's last line without newline or with fewer fields, a
    missing block value on the last row only, a Parquet file without footer) is waited for until its
    modification time is this old; then it is read like any other file (and quarantined if it is bad)."""


class DataQualityConfig(StrictModel):
    """What the schema check on ``data_block`` allows."""

    max_null_share: float = Field(0.2, ge=0, le=1)
    """Largest share of missing values allowed in any feature column of a block."""


class LabelsConfig(StrictModel):
    """Delayed labels: blocks may come without the target; it lands later in files of ``dir``."""

    dir: Path
    """Folder of the label files (CSV/Parquet with ``id_col`` and the target); relative to the spec's folder."""
    id_col: str
    """Column naming each row in the blocks and in the label files; never a model feature."""


class AlertsConfig(StrictModel):
    """Webhooks told about the pipeline's events: one JSON POST per event and block (docs/alerts.md)."""

    webhooks: list[str] = Field(default_factory=list)
    """http(s) URLs (Slack and Teams incoming webhooks show the ``text`` field), or ``${NAME}``: the URL in
    the environment variable NAME, read when an alert is sent. A URL may hold a token: it is never logged."""
    events: list[Literal[ALERT_EVENTS]] = Field(default_factory=lambda: list(ALERT_EVENTS))
    """Which events are alerts (default: all of :data:`ALERT_EVENTS`)."""
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    """How long one POST may take."""
    max_attempts: int = Field(4, ge=1, le=10)
    """POSTs tried per alert and webhook before it is recorded as failed (a failure never fails the block)."""
    retry_seconds: float = Field(1.0, ge=0, le=60)
    """Wait before the second attempt, doubled before each further one (or the receiver's ``Retry-After``)."""

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for i, url in enumerate(value):  # the URL itself is not repeated: it may hold a token
            if ENV_WEBHOOK.fullmatch(url):
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"webhook {i + 1} is not an http(s) URL nor ${{ENV_VAR}} (the value is not "
                                 "shown: it may hold a token)")
        if len(set(value)) != len(value):
            raise ValueError("a webhook is listed twice")
        return value

    @field_validator("events")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"an event is listed twice: {value}")
        return value


class PipelineSpec(StrictModel):
    """One monitored model. See the module docstring for an example."""

    name: str
    type: Literal["block", "stream", "ipip"]
    data_dir: Path
    file_pattern: str = "*"
    """Glob matched in ``data_dir``; only .csv, .parquet and .pq files are read."""
    target: str | None = None
    block_col: str | None = None
    features: list[str] | None = None
    """Model features; default every column but the target and the block column."""
    model_spec: ModelSpec
    task: Literal["classification", "regression"] | None = None
    """Default: inferred from the estimator class."""
    retrain_mode: Literal["full", "incremental", "window", "stacking", "replay_mix", "recalibration"] = "full"
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    custom_functions: CustomFunctionsConfig | None = None
    """The user's own train, retrain and fallback functions (see :class:`CustomFunctionsConfig`)."""
    drift: DriftConfig = Field(default_factory=DriftConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    schedule: ScheduleConfig | None = None
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    sensor: SensorConfig = Field(default_factory=SensorConfig)
    data_quality: DataQualityConfig = Field(default_factory=DataQualityConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    executor: Literal["in_process", "multiprocess"] = "in_process"
    """How a run executes its steps: ``in_process`` (default) runs them one after the other in the run's
    own process; ``multiprocess`` (Dagster's default) starts one process per step, which isolates steps
    from each other (a step that crashes its process) at the cost of a process start and the imports per
    step, seconds each."""
    prediction_only: bool = False
    model_file: Path | None = None
    """Prediction-only: the fitted model to serve (``.skops``; pickle/joblib only with
    ``trust_model_file``), imported into the model store with a manifest on first use."""
    trust_model_file: bool = False
    """Opt-in to import ``model_file`` even when it is a pickle or holds types outside the allow-list; it
    implies ``trust_pickle`` for the store's copy (the same object, written as pickle when skops cannot)."""
    trust_pickle: bool = False
    """Opt-in to load this pipeline's model versions that are pickles (river models, ``allow_any_module``
    packages skops cannot store): a pickle runs code when loaded. Without it, only skops files load."""
    labels: LabelsConfig | None = None
    """Delayed labels (see :class:`LabelsConfig`); block and stream pipelines with a target."""
    reference_file: Path | None = None
    """Prediction-only: the model's training features (CSV/Parquet); when given, drift of every block
    against it is reported (``drift_report``), without labels, retraining or promotion."""
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        try:
            return check_pipeline_name(value)
        except PipelineNameError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> PipelineSpec:
        if self.target is None and not self.prediction_only:
            raise ValueError("'target' is required unless prediction_only is true")
        if self.type in ("block", "ipip") and not self.block_col:
            raise ValueError(f"'block_col' is required for a {self.type} pipeline")
        if self.target and self.target == self.block_col:
            raise ValueError("'target' and 'block_col' must be different columns")
        if self.labels is not None:
            if self.prediction_only or self.type == "ipip":
                raise ValueError("'labels' (delayed labels) is for block and stream pipelines that retrain")
            if self.labels.id_col in (self.target, self.block_col):
                raise ValueError("'labels.id_col' must differ from 'target' and 'block_col'")
        reserved = {c for c in (self.target, self.block_col, self.labels and self.labels.id_col) if c}
        if self.features is not None and reserved & set(self.features):
            raise ValueError(f"'features' must not contain {sorted(reserved & set(self.features))}")
        if (self.model_file is not None or self.reference_file is not None) and not self.prediction_only:
            raise ValueError("'model_file' and 'reference_file' are for prediction_only pipelines")
        if self.reference_file is not None and self.model_file is None:
            raise ValueError("'reference_file' needs the 'model_file' it describes")
        custom = self.custom_functions
        if custom is not None and (self.prediction_only or self.type == "ipip"):
            raise ValueError("'custom_functions' train models: not for prediction_only or ipip pipelines")
        if custom is not None and custom.trains and self.retrain_mode not in CUSTOM_FUNCTION_MODES:
            raise ValueError(f"with custom_functions.train/retrain, retrain_mode only chooses the rows they learn "
                             f"from: one of {list(CUSTOM_FUNCTION_MODES)}, not '{self.retrain_mode}'")
        if not _imports_models(info):  # task, metrics and modes need the estimator class: a full load
            return self
        if self.task is None:
            self.task = _infer_task(self.model_spec)
        from calmops_dagster.learning.evaluation import check_metric_names, default_metric

        self.performance.metric = self.performance.metric or default_metric(self.task)
        check_metric_names(self.task, [self.performance.metric, *self.performance.thresholds])
        self._check_modes()
        return self

    def _check_modes(self) -> None:
        """Refuse at load time what a mode or type cannot do, instead of failing on a later block."""
        incremental = self.model_spec.is_river or hasattr(self.model_spec.estimator_class, "partial_fit")
        if self.retrain_mode == "incremental" and not incremental:
            raise ValueError(f"retrain_mode 'incremental' needs a model that can learn incrementally; "
                             f"{self.model_spec.dotted} has no partial_fit")
        if self.model_spec.is_river and not self.pickle_trusted:
            raise ValueError("river models are stored as pickle, which runs code when loaded: set "
                             "trust_pickle: true to train and load them")
        if self.retrain_mode == "recalibration" and self.task != "classification":
            raise ValueError("retrain_mode 'recalibration' recalibrates probabilities: classifiers only")
        if self.type == "ipip":
            if self.task != "classification":
                raise ValueError("an ipip pipeline is for (binary) classification")
            if self.performance.thresholds:
                raise ValueError("an ipip pipeline retrains every block and has no performance thresholds")

    @property
    def pickle_trusted(self) -> bool:
        """Whether this pipeline's model versions may be pickles: ``trust_pickle``, or ``trust_model_file``
        (whose user-provided model the store may have to keep as pickle)."""
        return self.trust_pickle or self.trust_model_file

    @property
    def partitions_name(self) -> str:
        """Name of the pipeline's dynamic partitions definition in the Dagster instance."""
        return f"{self.name}_blocks"

    def feature_columns(self, columns) -> list[str]:
        """The model's features among ``columns``: the spec's list, or every column but target and block."""
        if self.features is not None:
            return list(self.features)
        id_col = self.labels.id_col if self.labels else None
        return [c for c in columns if c not in (self.target, self.block_col, id_col)]


def _infer_task(model_spec: ModelSpec) -> str:
    """Classification or regression from the estimator's class (scikit-learn's mixins, river's base classes),
    without instantiating it."""
    from sklearn.base import ClassifierMixin, RegressorMixin

    cls = model_spec.estimator_class
    if model_spec.is_river:
        from river import base

        ClassifierMixin, RegressorMixin = base.Classifier, base.Regressor
    if issubclass(cls, ClassifierMixin):
        return "classification"
    if issubclass(cls, RegressorMixin):
        return "regression"
    raise ValueError(f"cannot tell whether {model_spec.dotted} is a classifier or a regressor; set 'task'")


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: field '{field}': {message}")
    return "\n".join(lines)


def parse_spec(raw: dict, path: Path, import_model: bool = True) -> PipelineSpec:
    """Validate a spec dict read from ``path``; relative ``data_dir`` is resolved against its folder.

    ``import_model=False`` checks everything but what needs the model's class (that it exists in its module
    and is an estimator, the task inferred from it, metric names, the retrain mode): the module's name is
    checked against the allow-list and its package looked up, not imported, which keeps e.g. ``calmops
    list`` under a second. Such a spec has ``task`` and ``performance.metric`` unset unless the file sets
    them; never run a pipeline from it.
    """
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        spec = PipelineSpec.model_validate(raw, context={"import_model": import_model})
    except ValidationError as exc:
        raise SpecError(_format_validation_error(path, exc)) from None
    if path.parent.name != spec.name:
        raise SpecError(f"{path}: field 'name': '{spec.name}' does not match its folder '{path.parent.name}'")
    if not spec.data_dir.is_absolute():
        spec.data_dir = (path.parent / spec.data_dir).resolve()
    if spec.labels is not None and not spec.labels.dir.is_absolute():
        spec.labels.dir = (path.parent / spec.labels.dir).resolve()
    for field in ("model_file", "reference_file"):
        value = getattr(spec, field)
        if value is not None and not value.is_absolute():
            setattr(spec, field, (path.parent / value).resolve())
    return spec


#: PyYAML's safe loader on libyaml's parser when PyYAML was built with it (the wheels are): the same documents
#: and values as ``yaml.safe_load``, about ten times faster. Every run process loads every pipeline's spec
#: (the code location), so at hundreds of pipelines the pure-Python parser costs seconds per run.
SPEC_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec(path: str | os.PathLike, import_model: bool = True) -> PipelineSpec:
    """Read and validate one ``pipeline.yaml``; every problem is a :class:`SpecError` naming the file."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=SPEC_LOADER)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(raw, path, import_model)


def spec_to_dict(spec: PipelineSpec) -> dict:
    """The spec as plain YAML-ready data (aliases such as ``class`` restored, unset optionals dropped).
    ``sensor.enabled`` is written only when off, so a spec saved here still loads in releases before it."""
    raw = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    if spec.sensor.enabled:
        del raw["sensor"]["enabled"]
    return raw


def save_spec(spec: PipelineSpec, path: str | os.PathLike) -> None:
    """Write the spec atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
    write_text_atomic(path, text)


def is_numeric_kind(series: pd.Series) -> bool:
    """Whether a column is numeric as the model and the schema check see it (bools are categories)."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def column_kinds(frame: pd.DataFrame, columns) -> dict[str, str]:
    """``numeric`` or ``categorical`` per column, as the model and the schema check see them."""
    return {c: "numeric" if is_numeric_kind(frame[c]) else "categorical" for c in columns}
