"""The prediction server: champions' predictions over HTTP (FastAPI), ``calmops serve [NAME]``.

Endpoints (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /predict/{pipeline}``: a JSON body of records ``[{"x1": 0.3, "segment": "a"}, ...]`` or
  ``{"columns": ["x1", "segment"], "data": [[0.3, "a"], ...]}``; answers the predictions, the class
  probabilities (classifiers) and the champion version that made them.
- ``GET /pipelines``, ``GET /pipelines/{name}``: champion version, the last drift decision (DuckDB
  ``drift_summary``) and the circuit breaker's state (``breaker_state`` table, when it exists).
- ``GET /reports/{pipeline}/``: the pipeline report (``calmops report``), built from DuckDB on each request;
  ``GET /reports/{pipeline}/{file}``: a file of the pipeline's report folder (per-block drift reports
  ``<block>.html`` and their shared ``plotly.min.js``). These are the links of the Dagster UI's metadata.
- ``GET /health``.

**Hot reload.** Every request looks at the pipeline's ``champion.json`` (one ``stat``). When the file changed
and names another version, the new model is loaded and hash-verified *before* the served reference is
swapped, under a per-pipeline lock; requests in flight keep the model they started with. So a promotion is
picked up without a restart and no request fails in between. A new champion that fails to load (hash
mismatch...) is not served: the previous one stays, and ``GET /pipelines/{name}`` shows ``reload_error``.

**Input checks** (4xx with what is wrong): unknown pipeline (404), empty body, invalid JSON, neither records
nor columns/data, no rows, missing or extra columns, a value of the wrong type (a number expected and text
given...), too many rows (422), a body larger than ``max_body_bytes`` (413). A pipeline name must match the
spec's name pattern before it is joined to ``CALMOPS_HOME``, so it can never reach outside it; a report file
name must be a plain name (letters, digits, ``_ . : + -``, not starting with a dot) of a file directly in
the pipeline's report folder.

**Security.** Binds to 127.0.0.1 by default. With ``api_key`` (``$CALMOPS_API_KEY`` for ``calmops serve``)
every endpoint but ``/health`` and the docs needs the header ``X-API-Key`` (report pages, opened from
a browser link, also take it as the query parameter ``?key=``); :func:`serve` refuses to bind to
anything but loopback without a key.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from calmops_dagster.errors import CalmOpsError, PipelineNameError
from calmops_dagster.spec import load_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import CHAMPION_POINTER, ModelStore
from calmops_dagster.store.paths import PIPELINE_NAME, CalmOpsHome, check_pipeline_name

log = logging.getLogger("calmops.server")

API_KEY_ENV = "CALMOPS_API_KEY"
API_KEY_HEADER = "X-API-Key"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_ROWS = 100_000
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: A file name the report endpoint serves: what block keys and report names are made of, no leading dot.
REPORT_FILE = re.compile(r"^[A-Za-z0-9_+:-][A-Za-z0-9_.+:-]*$")


class InputError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, the message says what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Champion:
    """A loaded champion: what serves predictions until the pointer changes."""

    version: str
    model: Any
    features: list[str]
    kinds: dict[str, str]
    task: str
    classes: list | None


@dataclass
class PipelineSlot:
    """One pipeline's served champion and what the pointer looked like when it was loaded."""

    name: str
    champion: Champion | None = None
    pointer_stamp: tuple | None = None
    reload_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _pointer_stamp(path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ChampionRegistry:
    """Loaded champions per pipeline, reloaded when ``champion.json`` changes."""

    def __init__(self, home: CalmOpsHome, pipelines: list[str] | None = None):
        self.home = home
        self.allowed = set(pipelines) if pipelines is not None else None
        self._slots: dict[str, PipelineSlot] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        found = [p.parent.name for p in self.home.spec_files() if PIPELINE_NAME.fullmatch(p.parent.name)]
        return [n for n in found if self.allowed is None or n in self.allowed]

    def check_name(self, name: str) -> str:
        """``name`` when it is a served pipeline; a 404 otherwise (checked before touching the disk)."""
        try:
            check_pipeline_name(name)
        except PipelineNameError as exc:
            raise InputError(404, str(exc)) from None
        if (self.allowed is not None and name not in self.allowed) or not self.home.spec_path(name).is_file():
            raise InputError(404, f"unknown pipeline '{name}'; served: {self.names()}")
        return name

    def _slot(self, name: str) -> PipelineSlot:
        with self._lock:
            return self._slots.setdefault(name, PipelineSlot(name))

    def champion(self, name: str) -> Champion:
        """The current champion of ``name``, reloading it first when the pointer changed."""
        slot = self._slot(name)
        pointer = self.home.models_dir(name) / CHAMPION_POINTER
        stamp = _pointer_stamp(pointer)
        if stamp != slot.pointer_stamp or slot.champion is None:
            with slot.lock:
                if stamp != slot.pointer_stamp or slot.champion is None:
                    self._reload(slot, stamp)
        if slot.champion is None:
            raise InputError(503, f"pipeline '{name}' has no champion model yet"
                                  + (f" ({slot.reload_error})" if slot.reload_error else ""))
        return slot.champion

    def _reload(self, slot: PipelineSlot, stamp: tuple | None) -> None:
        store = ModelStore(self.home.models_dir(slot.name))
        try:
            version = store.champion_version()
            if version is None:
                slot.pointer_stamp = stamp
                return
            if slot.champion is not None and slot.champion.version == version:
                slot.pointer_stamp = stamp
                return
            spec = load_spec(self.home.spec_path(slot.name))
            # signature, path, hash and format verified, fully deserialized before anything is swapped
            model, manifest = store.load_verified(version, spec.pickle_trusted)
            task = manifest.get("task") or spec.task
            features = list(manifest["features"])
            classes = list(getattr(model, "classes_", [])) if task == "classification" else None
            champion = Champion(version, model, features, dict(manifest.get("feature_kinds") or {}), task,
                                classes if hasattr(model, "predict_proba") else None)
        except (CalmOpsError, OSError, KeyError, ValueError) as exc:
            # keep serving the previous champion (if any); try again when the pointer changes next
            slot.reload_error = f"{type(exc).__name__}: {exc}"
            slot.pointer_stamp = stamp
            log.error("pipeline %s: champion not (re)loaded: %s", slot.name, slot.reload_error)
            return
        previous = slot.champion.version if slot.champion else None
        slot.champion = champion  # one reference assignment: requests in flight keep their own model
        slot.pointer_stamp = stamp
        slot.reload_error = None
        log.info("pipeline %s: serving champion %s (was %s)", slot.name, version, previous)

    def status(self, name: str) -> dict:
        slot = self._slot(name)
        return {"loaded_version": slot.champion.version if slot.champion else None,
                "reload_error": slot.reload_error}


# ---- request parsing and validation (pure functions, tested directly) -----------------------------------
def parse_rows(payload: Any, max_rows: int) -> pd.DataFrame:
    """Records or ``{"columns", "data"}`` into a DataFrame; :class:`InputError` says what is wrong."""
    if isinstance(payload, dict) and set(payload) == {"columns", "data"}:
        columns, data = payload["columns"], payload["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InputError(422, "'columns' must be a list of column names")
        if len(set(columns)) != len(columns):
            raise InputError(422, "'columns' holds a name twice")
        if not isinstance(data, list):
            raise InputError(422, "'data' must be a list of rows (lists of values)")
        _check_row_count(len(data), max_rows)
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(422, f"row {i} of 'data' must be a list of {len(columns)} values")
        return pd.DataFrame(data, columns=columns)
    if isinstance(payload, list):
        _check_row_count(len(payload), max_rows)
        first = payload[0]
        if not isinstance(first, dict):
            raise InputError(422, "records must be JSON objects {column: value}")
        keys = first.keys()
        for i, record in enumerate(payload):
            if not isinstance(record, dict):
                raise InputError(422, f"record {i} is not a JSON object")
            if record.keys() != keys:
                missing, extra = sorted(set(keys) - set(record)), sorted(set(record) - set(keys))
                raise InputError(422, f"record {i} has other columns than record 0 "
                                      f"(missing {missing}, extra {extra})")
        return pd.DataFrame.from_records(payload, columns=list(keys))
    raise InputError(422, 'expected a JSON list of records [{"col": value, ...}] or '
                          '{"columns": [...], "data": [[...], ...]}')


def _check_row_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise InputError(422, "no rows to predict")
    if n > max_rows:
        raise InputError(422, f"{n} rows is more than the limit of {max_rows} per request")


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_category(value) -> bool:
    return value is None or isinstance(value, (str, bool))


def check_columns(frame: pd.DataFrame, champion: Champion) -> pd.DataFrame:
    """The champion's feature columns of ``frame``, in its order, after checking names and value types."""
    missing = [c for c in champion.features if c not in frame.columns]
    extra = [c for c in frame.columns if c not in champion.features]
    if missing or extra:
        parts = ([f"missing column(s) {missing}"] if missing else []) + (
            [f"unexpected column(s) {extra}"] if extra else [])
        raise InputError(422, f"{'; '.join(parts)}; champion {champion.version} expects {champion.features}")
    frame = frame[champion.features]
    problems = []
    for column in champion.features:
        values = frame[column]
        kind = champion.kinds.get(column)
        if kind == "numeric":
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                continue
            bad = next((i for i, v in enumerate(values) if not _is_number(v) and not _nan(v)), None)
            if bad is not None:
                problems.append(f"column '{column}' expects numbers; row {bad} holds {values.iloc[bad]!r}")
            else:
                frame = frame.assign(**{column: pd.to_numeric(values)})
        else:
            if values.dtype == object or pd.api.types.is_numeric_dtype(values):
                bad = next((i for i, v in enumerate(values) if not _is_category(v)), None)
                if bad is not None:
                    problems.append(f"column '{column}' expects a category (text); row {bad} holds "
                                    f"{type(values.iloc[bad]).__name__} {values.iloc[bad]!r}")
    if problems:
        raise InputError(422, "; ".join(problems))
    return frame


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def predict_payload(champion: Champion, frame: pd.DataFrame) -> dict:
    """Predictions (and probabilities) of ``champion`` for the checked ``frame`` as JSON-ready data."""
    try:
        predictions = champion.model.predict(frame)
        proba = champion.model.predict_proba(frame) if champion.classes is not None else None
    except (ValueError, TypeError) as exc:
        raise InputError(422, f"the model cannot predict these rows: {exc}") from None
    result = {"model_version": champion.version, "task": champion.task, "n_rows": len(frame),
              "predictions": np.asarray(predictions).tolist()}
    if proba is not None:
        result["classes"] = np.asarray(champion.classes).tolist()
        result["probabilities"] = np.round(np.asarray(proba, dtype=float), 6).tolist()
    return result


# ---- the app -------------------------------------------------------------------------------------------
def _latest_row(store: MetricsStore, sql: str, name: str) -> dict | None:
    frame = store.query(sql, [name])
    if frame.empty:
        return None
    row = frame.iloc[0].to_dict()
    return json.loads(pd.Series(row).to_json(date_format="iso"))


def pipeline_status(home: CalmOpsHome, name: str) -> dict:
    """Champion, last drift decision and breaker state of one pipeline (a missing table or a busy database
    gives ``null`` and a note instead of an error)."""
    store = ModelStore(home.models_dir(name))
    history = store.champion_history()
    out: dict[str, Any] = {"name": name, "champion_version": store.champion_version(),
                           "champion_since": history[-1] if history else None, "versions": store.versions()}
    metrics = MetricsStore(home.metrics_db, max_wait_seconds=2.0)
    try:
        out["last_drift"] = _latest_row(metrics, (
            "SELECT block, drift_detected, drift_share, n_drifted, drifted_features, performance_drop, retrain, "
            "reason, reference_version, computed_at FROM drift_summary WHERE pipeline = ? "
            "ORDER BY computed_at DESC LIMIT 1"), name)
        tables = set(metrics.query("SELECT table_name FROM information_schema.tables")["table_name"])
        out["breaker"] = (_latest_row(metrics, "SELECT * FROM breaker_state WHERE pipeline = ? LIMIT 1", name)
                          if "breaker_state" in tables else None)
    except Exception as exc:  # noqa: BLE001 -- status must answer even when DuckDB is busy or old
        out["metrics_error"] = f"{type(exc).__name__}: {exc}"
    return out


def create_app(home: CalmOpsHome, api_key: str | None = None, pipelines: list[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_rows: int = DEFAULT_MAX_ROWS):
    """The FastAPI app serving the champions of ``home`` (only ``pipelines`` when given)."""
    registry = ChampionRegistry(home, pipelines)
    app = FastAPI(title="calmops prediction server", version="1",
                  description="Predictions of each pipeline's champion model; reloaded on promotion.")
    app.state.registry = registry
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: str | None = Depends(header)) -> None:
        if api_key is not None and not (key and hmac.compare_digest(key.encode(), api_key.encode())):
            raise InputError(401, f"missing or wrong {API_KEY_HEADER} header")

    def require_key_or_query(request: Request, key: str | None = Depends(header)) -> None:
        given = key or request.query_params.get("key")
        if api_key is not None and not (given and hmac.compare_digest(given.encode(), api_key.encode())):
            raise InputError(401, f"missing or wrong {API_KEY_HEADER} header (or ?key= for report pages)")

    @app.exception_handler(InputError)
    async def _input_error(_request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/health", summary="Liveness: the server answers")
    def health() -> dict:
        return {"status": "ok", "pipelines": len(registry.names())}

    @app.get("/pipelines", summary="Served pipelines and their champion versions", dependencies=[Depends(require_key)])
    def list_pipelines() -> list[dict]:
        return [{"name": n, "champion_version": ModelStore(home.models_dir(n)).champion_version()}
                for n in registry.names()]

    @app.get("/pipelines/{name}", summary="Champion, last drift decision and breaker state",
             dependencies=[Depends(require_key)])
    def get_pipeline(name: str) -> dict:
        registry.check_name(name)
        return {**pipeline_status(home, name), "served": registry.status(name)}

    @app.get("/reports/{name}/", summary="The pipeline report (HTML, built from DuckDB now)",
             response_class=HTMLResponse, dependencies=[Depends(require_key_or_query)])
    def pipeline_report(name: str) -> HTMLResponse:
        from calmops_dagster.interfaces.pipeline_report import build_pipeline_report

        registry.check_name(name)
        return HTMLResponse(build_pipeline_report(home, name))

    @app.get("/reports/{name}/{file}", summary="A file of the pipeline's report folder (block drift reports)",
             dependencies=[Depends(require_key_or_query)])
    def report_file(name: str, file: str) -> FileResponse:
        registry.check_name(name)
        return FileResponse(report_path(home, name, file))

    body_schema = {
        "oneOf": [
            {"type": "array", "items": {"type": "object"}, "description": "records: one object per row"},
            {"type": "object", "required": ["columns", "data"],
             "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array"}}}},
        ]
    }

    @app.post("/predict/{pipeline}", summary="Predictions of the pipeline's champion",
              dependencies=[Depends(require_key)],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": body_schema}}}},
              responses={200: {"description": "model_version, predictions, classes and probabilities"},
                         404: {"description": "unknown pipeline"}, 413: {"description": "body too large"},
                         422: {"description": "bad rows: what is wrong"}})
    async def predict(pipeline: str, request: Request):
        registry.check_name(pipeline)
        body = await _read_body(request, max_body_bytes)
        if not body.strip():
            raise InputError(400, "empty body: send JSON records or {\"columns\": [...], \"data\": [...]}")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(400, f"body is not valid JSON: {exc}") from None
        return JSONResponse(await run_in_threadpool(_predict, registry, pipeline, payload, max_rows))

    return app


def report_path(home: CalmOpsHome, name: str, file: str):
    """The file ``file`` directly inside ``name``'s report folder; 404 for anything else (no traversal)."""
    folder = home.reports_dir(name).resolve()
    if not REPORT_FILE.match(file or ""):
        raise InputError(404, f"'{file}' is not a report file name")
    path = (folder / file).resolve()
    if path.parent != folder or not path.is_file():
        raise InputError(404, f"no report '{file}' for pipeline '{name}'")
    return path


def _predict(registry: ChampionRegistry, pipeline: str, payload, max_rows: int) -> dict:
    frame = parse_rows(payload, max_rows)
    champion = registry.champion(pipeline)  # the reference used for this whole request
    result = predict_payload(champion, check_columns(frame, champion))
    return {"pipeline": pipeline, **result}


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(413, f"body of {int(declared)} bytes is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without an API key."""
    if host not in LOOPBACK and not api_key:
        raise CalmOpsError(f"refusing to bind to {host} without an API key: set ${API_KEY_ENV} "
                           f"(clients then send the {API_KEY_HEADER} header), or bind to 127.0.0.1")


def serve(home: CalmOpsHome, pipelines: list[str] | None, host: str = "127.0.0.1", port: int = 5001,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> int:
    """Run the server with uvicorn until interrupted (what ``calmops serve`` does)."""
    import uvicorn

    api_key = os.environ.get(API_KEY_ENV) or None
    check_bind(host, api_key)
    app = create_app(home, api_key=api_key, pipelines=pipelines, max_body_bytes=max_body_bytes)
    served = ", ".join(pipelines) if pipelines else "every pipeline"
    print(f"serving {served} of {home.root} on http://{host}:{port} (docs: /docs)"
          + ("; API key required" if api_key else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
