"""The prediction server: champions' predictions over HTTP (FastAPI), ``calmops serve [NAME]``.

Predictions, the pipelines' state, their reports and the landing page, with a promoted champion picked up
without a restart, every input checked (one clear status and detail each) and a key required off loopback.
Endpoints, hot reload, input checks and security: docs/server.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from calmops_dagster.errors import CalmOpsError, ModelIntegrityError, PipelineNameError
from calmops_dagster.interfaces.predict_input import (
    DEFAULT_MAX_DEPTH,
    InputError,
    InputSchema,
    check_columns,
    check_content_type,
    parse_body,
    parse_rows,
    unseen_categories,
)
from calmops_dagster.reports.page_style import PLOTLY_ROUTE, plotly_js_bytes
from calmops_dagster.spec import load_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import CHAMPION_POINTER, ModelStore
from calmops_dagster.store.paths import PIPELINE_NAME, CalmOpsHome, check_pipeline_name
from calmops_dagster.store.storage import StoragePath
from calmops_dagster.store.storage import stamp as storage_stamp

log = logging.getLogger("calmops.server")

API_KEY_ENV = "CALMOPS_API_KEY"
API_KEY_HEADER = "X-API-Key"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_ROWS = 100_000
#: Seconds from a request's headers to the end of its body. A client sends its body right after its headers,
#: so an ordinary request (kilobytes) needs milliseconds, and the largest default body (10 MB) arrives within
#: it over a 3 Mbit/s link; a client that stalls or trickles frees its connection within half a minute.
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: A file name the report endpoint serves: what block keys and report names are made of, no leading dot.
REPORT_FILE = re.compile(r"^[A-Za-z0-9_+:-][A-Za-z0-9_.+:-]*$")


@dataclass
class Champion:
    """A loaded champion: what serves predictions until the pointer changes."""

    version: str
    model: Any
    schema: InputSchema
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
        stamp = storage_stamp(pointer)
        if stamp != slot.pointer_stamp or slot.champion is None:
            with slot.lock:
                if stamp != slot.pointer_stamp or slot.champion is None:
                    self._reload(slot, stamp)
        if slot.champion is None:
            raise InputError(503, f"pipeline '{name}' has no usable champion model: {slot.reload_error}"
                             if slot.reload_error else f"pipeline '{name}' has no champion model yet")
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
            if not callable(getattr(model, "predict", None)):
                raise CalmOpsError(f"{version} holds a {type(model).__name__}, which has no predict method")
            task = manifest.get("task") or spec.task
            schema = InputSchema.from_champion(list(manifest["features"]), dict(manifest.get("feature_kinds") or {}),
                                               store.reference(version))
            classes = list(getattr(model, "classes_", [])) if task == "classification" else None
            champion = Champion(version, model, schema, task, classes if hasattr(model, "predict_proba") else None)
        except (CalmOpsError, OSError, KeyError, ValueError, TypeError) as exc:
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


def _finite(values) -> tuple[list, int]:
    """``values`` as JSON-ready lists with NaN and infinities as ``null`` (JSON has neither), and how many."""
    array = np.asarray(values)
    if array.dtype.kind != "f":
        return array.tolist(), 0
    bad = ~np.isfinite(array)
    return np.where(bad, None, array).tolist(), int(bad.sum())


def predict_payload(champion: Champion, frame: pd.DataFrame) -> dict:
    """Predictions (and probabilities) of ``champion`` for the checked ``frame`` as JSON-ready data."""
    try:
        predictions = champion.model.predict(frame)
        proba = champion.model.predict_proba(frame) if champion.classes is not None else None
    except AttributeError as exc:  # the object, not the rows: unfitted, or pickled by another library version
        raise InputError(503, f"champion {champion.version} cannot predict: {type(exc).__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise InputError(422, f"the model cannot predict these rows: {exc}") from None
    values, n_bad = _finite(predictions)
    result = {"model_version": champion.version, "task": champion.task, "n_rows": len(frame),
              "predictions": values}
    warnings = unseen_categories(frame, champion.schema)
    if n_bad:
        warnings.append({"column": "predictions", "value": None, "rows": n_bad,
                         "message": "the model predicted NaN or infinity for these rows; answered as null"})
    if proba is not None:
        result["classes"] = np.asarray(champion.classes).tolist()
        result["probabilities"] = _finite(np.round(np.asarray(proba, dtype=float), 6))[0]
    result["warnings"] = warnings
    return result


# ---- the app -------------------------------------------------------------------------------------------
def _latest_row(store: MetricsStore, sql: str, name: str) -> dict | None:
    frame = store.query(sql, [name], pipeline=name)
    if frame.empty:
        return None
    row = frame.iloc[0].to_dict()
    return json.loads(pd.Series(row).to_json(date_format="iso"))


def pipeline_status(home: CalmOpsHome, name: str) -> dict:
    """Champion, last drift decision and breaker state of one pipeline (a missing table or a busy database
    gives ``null`` and a note instead of an error; a corrupt champion pointer is a 503 with the reason)."""
    store = ModelStore(home.models_dir(name))
    try:
        version, history = store.champion_version(), store.champion_history()
    except ModelIntegrityError as exc:
        raise InputError(503, str(exc)) from None
    out: dict[str, Any] = {"name": name, "champion_version": version,
                           "champion_since": history[-1] if history else None, "versions": store.versions()}
    metrics = MetricsStore(home.metrics_db, max_wait_seconds=2.0)
    try:
        out["last_drift"] = _latest_row(metrics, (
            "SELECT block, drift_detected, drift_share, n_drifted, drifted_features, performance_drop, retrain, "
            "reason, reference_version, computed_at FROM drift_summary WHERE pipeline = ? "
            "ORDER BY computed_at DESC LIMIT 1"), name)
        out["breaker"] = _latest_row(metrics, "SELECT * FROM breaker_state WHERE pipeline = ? LIMIT 1", name)
    except Exception as exc:  # noqa: BLE001 -- status must answer even when DuckDB is busy or old
        out["metrics_error"] = f"{type(exc).__name__}: {exc}"
    return out


# ---- response models: what /openapi.json promises ------------------------------------------------------
class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: what is wrong."""

    detail: str


class Health(BaseModel):
    status: str
    pipelines: int


class PipelineSummary(BaseModel):
    name: str
    champion_version: str | None
    error: str | None = None
    """Why the champion pointer cannot be read (the other pipelines are still listed)."""


class Served(BaseModel):
    loaded_version: str | None
    reload_error: str | None
    """Why the current champion is not served (the previous one stays), e.g. a failed signature."""


class PipelineStatus(BaseModel):
    name: str
    champion_version: str | None
    champion_since: dict | None
    versions: list[str]
    last_drift: dict | None = None
    breaker: dict | None = None
    metrics_error: str | None = None
    served: Served


class PredictionWarning(BaseModel):
    """Something the server answered despite: a category the champion never saw, a non-finite prediction."""

    column: str
    value: Any
    rows: int
    message: str


class Prediction(BaseModel):
    pipeline: str
    model_version: str
    task: str
    n_rows: int
    predictions: list
    classes: list | None = None
    probabilities: list[list[float | None]] | None = None
    warnings: list[PredictionWarning]


_ERRORS = {
    400: "empty body, not JSON, or nested too deep",
    401: f"missing or wrong {API_KEY_HEADER} header",
    404: "unknown pipeline",
    408: "the body did not arrive within the body timeout; the connection is closed",
    413: "body larger than the limit",
    415: "a Content-Type other than JSON",
    422: "rows that do not fit the champion: what is wrong, by column and row",
    503: "no usable champion (none yet, a corrupt champion pointer, a model that cannot predict): the reason",
}


def _error_responses(*statuses: int) -> dict:
    return {status: {"model": ErrorBody, "description": _ERRORS[status]} for status in statuses}


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _predict_operation(name: str, champion: Champion | None, max_rows: int) -> dict:
    """The OpenAPI operation ``POST /predict/<name>``: the champion's columns and types as the body schema."""
    errors = {str(s): {"description": _ERRORS[s], "content": {"application/json": {"schema": _ref(ErrorBody)}}}
              for s in (400, 404, 408, 413, 415, 422, 503)}
    if champion is None:
        body = {"type": ["array", "object"], "description": "no champion is loaded: every request is a 503"}
    else:
        body = champion.schema.body_schema(max_rows)
    return {"post": {
        "summary": f"Predictions of the champion of '{name}'",
        "description": (f"Champion {champion.version}: columns {champion.schema.features}." if champion
                        else "No champion is served yet."),
        "operationId": f"predict_{name}",
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "predictions, probabilities (classifiers), warnings",
                              "content": {"application/json": {"schema": _ref(Prediction)}}}, **errors},
    }}


def build_openapi(app: FastAPI, registry: ChampionRegistry, api_key: str | None, max_rows: int) -> dict:
    """The OpenAPI document of the served pipelines as they are now (built per request: champions change)."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (Prediction, ErrorBody):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
    for operations in doc["paths"].values():
        for operation in operations.values():
            # FastAPI documents its own 422 for path parameters; this server never answers it for them
            if "HTTPValidationError" in json.dumps(operation.get("responses", {}).get("422", {})):
                del operation["responses"]["422"]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    parameter["schema"]["pattern"] = PIPELINE_NAME.pattern
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for name in registry.names():
        try:
            champion = registry.champion(name)
        except InputError:
            champion = None
        doc["paths"][f"/predict/{name}"] = _predict_operation(name, champion, max_rows)
    if api_key is not None:
        schemas_security = doc["components"].setdefault("securitySchemes", {})
        schemas_security["APIKeyHeader"] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
        for path, operations in doc["paths"].items():
            if path == "/health":
                continue
            for operation in operations.values():
                operation["security"] = [{"APIKeyHeader": []}]
                operation["responses"]["401"] = {"description": _ERRORS[401],
                                                 "content": {"application/json": {"schema": _ref(ErrorBody)}}}
    return doc


def create_app(home: CalmOpsHome, api_key: str | None = None, pipelines: list[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_rows: int = DEFAULT_MAX_ROWS,
               max_depth: int = DEFAULT_MAX_DEPTH, body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS):
    """The FastAPI app serving the champions of ``home`` (only ``pipelines`` when given)."""
    registry = ChampionRegistry(home, pipelines)
    # the API description and its pages are this app's own routes, so that they need the key as well
    app = FastAPI(title="calmops prediction server", version="1", openapi_url=None, docs_url=None, redoc_url=None,
                  description="Predictions of each pipeline's champion model; reloaded on promotion.")
    app.state.registry = registry

    def require_key(request: Request) -> None:
        key = request.headers.get(API_KEY_HEADER)
        if api_key is not None and not (key and hmac.compare_digest(key.encode(), api_key.encode())):
            raise InputError(401, f"missing or wrong {API_KEY_HEADER} header")

    def require_key_or_query(request: Request) -> None:
        given = request.headers.get(API_KEY_HEADER) or request.query_params.get("key")
        if api_key is not None and not (given and hmac.compare_digest(given.encode(), api_key.encode())):
            raise InputError(401, f"missing or wrong {API_KEY_HEADER} header (or ?key= for report pages and docs)")

    def openapi_url(request: Request) -> str:
        """Where a docs page loads the API description: with the ``?key=`` the page was opened with."""
        url = request.scope.get("root_path", "").rstrip("/") + "/openapi.json"
        key = request.query_params.get("key")
        return f"{url}?key={quote(key, safe='')}" if api_key is not None and key else url

    @app.exception_handler(InputError)
    async def _input_error(_request, exc: InputError):
        # a 408 leaves the rest of the body unread on the connection: close it
        headers = {"Connection": "close"} if exc.status == 408 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect):
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s disconnected before its body was in (%s): %s %s", client, exc, request.method,
                 request.url.path)
        return Response(status_code=499)  # nginx's "client closed request"; nobody is there to read it

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_key_or_query)])
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_key_or_query)])
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url(request), title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False, dependencies=[Depends(require_key_or_query)])
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url(request), title=f"{app.title} - ReDoc")

    @app.get("/health", summary="Liveness: the server answers", response_model=Health)
    def health() -> dict:
        return {"status": "ok", "pipelines": len(registry.names())}

    @app.get("/", summary="The landing page: every pipeline at a glance (HTML)", response_class=HTMLResponse,
             dependencies=[Depends(require_key_or_query)], include_in_schema=False)
    def landing_page(request: Request) -> HTMLResponse:
        from calmops_dagster.interfaces.landing_page import build_landing_page

        return HTMLResponse(build_landing_page(home, registry.names(), request.query_params.get("key")))

    @app.get(PLOTLY_ROUTE, summary="plotly.js of the installed plotly package", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(plotly_js_bytes(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/pipelines", summary="Served pipelines and their champion versions",
             dependencies=[Depends(require_key)], response_model=list[PipelineSummary])
    def list_pipelines() -> JSONResponse:
        listed = []
        for name in registry.names():
            try:
                listed.append({"name": name, "champion_version": ModelStore(home.models_dir(name)).champion_version()})
            except ModelIntegrityError as exc:
                listed.append({"name": name, "champion_version": None, "error": str(exc)})
        return JSONResponse(listed)

    @app.get("/pipelines/{name}", summary="Champion, last drift decision and breaker state",
             dependencies=[Depends(require_key)], response_model=PipelineStatus,
             responses=_error_responses(404, 503))
    def get_pipeline(name: str) -> JSONResponse:
        registry.check_name(name)
        return JSONResponse({**pipeline_status(home, name), "served": registry.status(name)})

    @app.get("/reports/{name}/", summary="The pipeline report (HTML, built from DuckDB now)",
             response_class=HTMLResponse, dependencies=[Depends(require_key_or_query)],
             include_in_schema=False)
    def pipeline_report(name: str) -> HTMLResponse:
        from calmops_dagster.interfaces.pipeline_report import build_pipeline_report

        registry.check_name(name)
        return HTMLResponse(build_pipeline_report(home, name, plotly_src=PLOTLY_ROUTE))

    @app.get("/reports/{name}/{file}", summary="A file of the pipeline's report folder (block drift reports)",
             dependencies=[Depends(require_key_or_query)], include_in_schema=False)
    def report_file(name: str, file: str) -> Response:
        registry.check_name(name)
        path = report_path(home, name, file)
        if isinstance(path, StoragePath):  # in object storage: its bytes, typed by its name
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return Response(path.read_bytes(), media_type=media)
        return FileResponse(path)

    @app.post("/predict/{pipeline}", include_in_schema=False, dependencies=[Depends(require_key)])
    async def predict(pipeline: str, request: Request):
        registry.check_name(pipeline)
        check_content_type(request.headers.get("content-type"))
        payload = parse_body(await _read_body(request, max_body_bytes, body_timeout_seconds), max_depth)
        return JSONResponse(await run_in_threadpool(_predict, registry, pipeline, payload, max_rows))

    app.openapi = lambda: build_openapi(app, registry, api_key, max_rows)
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
    result = predict_payload(champion, check_columns(frame, champion.schema, champion.version))
    return {"pipeline": pipeline, **result}


async def _read_body(request, limit: int, timeout: float) -> bytes:
    """The request's body: 413 beyond ``limit`` bytes, 408 when it is not all there ``timeout`` seconds after
    the headers, :class:`ClientDisconnect` saying how much had come when the client leaves first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(413, f"body of {int(declared)} bytes is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    expected = f"{int(declared)} bytes" if declared is not None and declared.isdigit() else "a chunked body"
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise InputError(413, f"body is larger than the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise InputError(408, f"the body did not arrive within {timeout:g} s of the headers "
                              f"({size} bytes of {expected} came); send it with the headers") from None
    except ClientDisconnect:
        raise ClientDisconnect(f"{size} bytes of {expected} came") from None
    return b"".join(chunks)


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without an API key."""
    if host not in LOOPBACK and not api_key:
        raise CalmOpsError(f"refusing to bind to {host} without an API key: set ${API_KEY_ENV} "
                           f"(clients then send the {API_KEY_HEADER} header), or bind to 127.0.0.1")


def serve(home: CalmOpsHome, pipelines: list[str] | None, host: str = "127.0.0.1", port: int = 5001,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS) -> int:
    """Run the server with uvicorn until interrupted (what ``calmops serve`` does)."""
    import uvicorn

    api_key = os.environ.get(API_KEY_ENV) or None
    check_bind(host, api_key)
    app = create_app(home, api_key=api_key, pipelines=pipelines, max_body_bytes=max_body_bytes,
                     body_timeout_seconds=body_timeout_seconds)
    served = ", ".join(pipelines) if pipelines else "every pipeline"
    print(f"serving {served} of {home.root} on http://{host}:{port} (docs: /docs, reports: /reports/<name>/)"
          + ("; API key required (a browser adds ?key=... to /docs and report links)" if api_key else ""),
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
