"""Alerts: a block's events, each told once to every webhook of the spec's ``alerts`` section.

A block's events are derived from what it recorded (:func:`block_events`, pure): ``drift`` (its
``drift_summary`` row decided drift), ``promotion`` and ``rollback`` (its ``promotions`` row),
``estimated_drop`` (the champion's label-free estimate of the primary metric lies wholly below its reference
less ``performance.max_relative_drop``), ``check_failed`` (an asset check of the block failed, given by the
caller) and ``breaker_open`` (the circuit breaker opened on a run of the block, a ``breaker_events`` row).

:func:`send_block_alerts` sends the events of ``alerts.events`` as one JSON POST each (``event``,
``pipeline``, ``block``, ``summary``, ``report_url``, ``at``, ``text`` for Slack and Teams, ``details``),
retried with backoff, and records every outcome in the metric table ``alerts``. An event already sent to a
webhook (an ``alerts`` row with status ``sent``) is not sent to it again, so a rerun of the block, or a
second caller, sends nothing twice; one that failed is tried again the next time the block's alerts are
sent. Without a webhook the events are recorded with status ``no_webhook`` (the landing page shows them).
It never raises: a webhook that fails, or anything else going wrong here, never fails the block. A URL may
hold a token, so none is logged or stored: a webhook is named by a fingerprint (``sha256:`` and 12 hex
digits of its URL).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pandas as pd

from calmops_dagster.reports.pipeline_overview import reports_url
from calmops_dagster.spec import ENV_WEBHOOK, AlertsConfig, PipelineSpec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

log = logging.getLogger("calmops.alerts")

SENT, FAILED, NO_WEBHOOK = "sent", "failed", "no_webhook"
#: Statuses after which an event is not sent again to the same webhook.
DONE = (SENT, NO_WEBHOOK)
#: Longest wait between two attempts, whatever ``Retry-After`` asks.
MAX_WAIT_SECONDS = 60.0
#: HTTP statuses worth another attempt (besides 5xx): timeout, too early, too many requests.
RETRY_STATUSES = (408, 425, 429)


@dataclass(frozen=True)
class BlockRecord:
    """What one block recorded, as the events are derived from it (rows as dicts, ``None`` when absent)."""

    pipeline: str
    block: str
    drift: dict | None = None
    """The block's ``drift_summary`` row."""
    promotion: dict | None = None
    """The block's ``promotions`` row."""
    estimate: dict | None = None
    """The champion's estimate of the primary metric on the block (a ``performance`` row of role
    ``estimated``) with ``reference``, the champion's score on its own held-out rows (``None``: unknown)."""
    breaker_openings: list[dict] = field(default_factory=list)
    """``breaker_events`` rows of the block with event ``opened``."""
    failed_checks: dict[str, str] = field(default_factory=dict)
    """Asset checks of the block that failed: name -> what failed."""


@dataclass(frozen=True)
class Event:
    """One thing worth telling about a block: what, one human sentence, when, and its figures."""

    event: str
    block: str
    summary: str
    at: str
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """The outcome of POSTing one alert to one webhook."""

    status: str
    attempts: int
    http_status: int | None = None
    error: str | None = None


def _iso(value) -> str:
    """A recorded time (datetime, Timestamp, ISO text or missing: now) as ISO 8601 text in UTC."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return datetime.now(UTC).isoformat(timespec="seconds")
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.isoformat(timespec="seconds")


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def drop_threshold(reference: float, max_relative_drop: float) -> float:
    """The value below which an estimate is a drop: ``reference`` less ``max_relative_drop`` of it."""
    return reference - abs(reference) * max_relative_drop


def estimated_drop_event(spec: PipelineSpec, block: str, estimate: dict | None) -> Event | None:
    """``estimated_drop`` when the estimate's whole interval lies below :func:`drop_threshold` (the rule of
    :func:`calmops_dagster.steps.estimated_performance.estimated_drop`), else ``None``."""
    if not estimate or _num(estimate.get("reference")) is None or _num(estimate.get("value")) is None:
        return None
    metric, drop = spec.performance.metric, spec.performance.max_relative_drop
    reference, value = float(estimate["reference"]), float(estimate["value"])
    upper = _num(estimate.get("ci_high"))
    upper = value if upper is None else upper
    threshold = drop_threshold(reference, drop)
    if upper >= threshold:
        return None
    low = _num(estimate.get("ci_low"))
    interval = f" (interval {low:.3g} to {upper:.3g})" if low is not None else ""
    summary = (f"Estimated {metric} of champion {estimate.get('model_version')} on block {block} of {spec.name} "
               f"is {value:.3g}{interval}, below {threshold:.3g} (its reference {reference:.3g} less "
               f"{drop:.0%}), estimated without labels.")
    return Event("estimated_drop", block, summary, _iso(estimate.get("computed_at")), {
        "metric": metric, "model_version": estimate.get("model_version"), "estimate": value, "ci_low": low,
        "ci_high": upper, "reference": reference, "threshold": threshold})


def _drift_event(spec: PipelineSpec, block: str, row: dict | None) -> Event | None:
    if not row or not bool(row.get("drift_detected")):
        return None
    features = [f for f in str(row.get("drifted_features") or "").split(",") if f]
    tested, share = int(row.get("n_tested") or 0), _num(row.get("drift_share")) or 0.0
    what = (f"{len(features)} of {tested} features drifted ({', '.join(features[:8])}"
            f"{', ...' if len(features) > 8 else ''}), drift share {share:.3g}" if features
            else "the multivariate tests found drift though no single feature passed its bar")
    summary = f"Block {block} of {spec.name} drifted against champion {row.get('reference_version')}: {what}."
    return Event("drift", block, summary, _iso(row.get("computed_at")), {
        "drift_share": share, "drifted_features": features, "n_tested": tested,
        "reference_version": row.get("reference_version"), "retrain": bool(row.get("retrain"))})


def _promotion_events(spec: PipelineSpec, block: str, row: dict | None) -> list[Event]:
    if not row or row.get("decision") not in ("promoted", "rolled_back"):
        return []
    before, after, metric = row.get("champion_before"), row.get("champion_after"), row.get("metric")
    details = {"champion_before": before, "champion_after": after, "metric": metric,
               "champion_score": _num(row.get("champion_score")),
               "challenger_score": _num(row.get("challenger_score")), "reason": row.get("reason")}
    at = _iso(row.get("decided_at"))
    reason = str(row.get("reason") or "")[:200]
    if row["decision"] == "rolled_back":
        summary = f"Block {block} of {spec.name} rolled the champion back from {before} to {after}: {reason}."
        return [Event("rollback", block, summary, at, details)]
    if not before:
        summary = f"Block {block} of {spec.name} trained its first champion, {after}."
    else:
        new, old = details["challenger_score"], details["champion_score"]
        scores = f": {metric} {new:.3g} against {old:.3g}" if new is not None and old is not None else f" ({reason})"
        summary = f"Block {block} of {spec.name} promoted challenger {after} over {before}{scores}."
    return [Event("promotion", block, summary, at, details)]


def _breaker_event(spec: PipelineSpec, block: str, openings: list[dict]) -> Event | None:
    if not openings:
        return None
    row = openings[-1]
    failures = int(row.get("consecutive_failures") or 0)
    summary = (f"Circuit breaker of {spec.name} opened at block {block} after {failures} consecutive "
               f"training/promotion failures; retraining is paused (last: {str(row.get('reason') or '')[:200]}).")
    return Event("breaker_open", block, summary, _iso(row.get("event_at")),
                 {"consecutive_failures": failures, "reason": row.get("reason"), "run_id": row.get("run_id")})


def _checks_event(spec: PipelineSpec, block: str, failed: dict[str, str], at: str) -> Event | None:
    if not failed:
        return None
    what = "; ".join(f"{name} ({why})" if why else name for name, why in sorted(failed.items()))
    summary = f"Check{'s' if len(failed) > 1 else ''} failed on block {block} of {spec.name}: {what}."
    return Event("check_failed", block, summary, at, {"checks": dict(sorted(failed.items()))})


def block_events(spec: PipelineSpec, record: BlockRecord) -> list[Event]:
    """Every event ``record`` holds, in the order of :data:`~calmops_dagster.spec.ALERT_EVENTS` (whether
    the spec alerts about them or not)."""
    block = record.block
    at = _iso((record.drift or {}).get("computed_at"))
    found = [_drift_event(spec, block, record.drift), *_promotion_events(spec, block, record.promotion),
             _breaker_event(spec, block, record.breaker_openings),
             _checks_event(spec, block, record.failed_checks, at),
             estimated_drop_event(spec, block, record.estimate)]
    return [event for event in found if event is not None]


# ---- reading a block's rows ------------------------------------------------------------------------------
def _rows_by_block(frame: pd.DataFrame) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in frame.to_dict(orient="records"):
        out.setdefault(str(row["block"]), []).append(row)
    return out


def read_block_records(spec: PipelineSpec, home: CalmOpsHome, metrics: MetricsStore,
                       block: str | None = None) -> dict[str, BlockRecord]:
    """The :class:`BlockRecord` of ``block`` (default: of every block with a drift or promotion row), read
    from DuckDB and the champions' manifests (no check results: they are not stored)."""
    where, params = ("WHERE pipeline = ?", [spec.name]) if block is None else (
        "WHERE pipeline = ? AND block = ?", [spec.name, block])
    drift, promotions, estimates, openings = metrics.queries([
        (f"SELECT * FROM drift_summary {where}", params),
        (f"SELECT * FROM promotions {where}", params),
        ((f"SELECT block, model_version, value, ci_low, ci_high, computed_at FROM performance {where} "
          "AND role = 'estimated' AND evaluated_on = 'block' AND metric = ?"), [*params, spec.performance.metric]),
        (f"SELECT * FROM breaker_events {where} AND event = 'opened' ORDER BY event_at", params),
    ], pipeline=spec.name)
    store, references = ModelStore(home.models_dir(spec.name)), {}
    drift, promotions, estimates, openings = (_rows_by_block(f) for f in (drift, promotions, estimates, openings))
    records = {}
    for key in sorted({*drift, *promotions, *([block] if block is not None else [])}):
        estimate = (estimates.get(key) or [None])[0]
        if estimate is not None:
            version = estimate["model_version"]
            if version not in references:
                try:
                    references[version] = _num((store.manifest(version).get("metrics") or {}).get(
                        spec.performance.metric))
                except (OSError, ValueError, KeyError):
                    references[version] = None
            estimate = {**estimate, "reference": references[version]}
        records[key] = BlockRecord(spec.name, key, (drift.get(key) or [None])[0],
                                   (promotions.get(key) or [None])[0], estimate, openings.get(key, []))
    return records


# ---- sending -----------------------------------------------------------------------------------------------
def fingerprint(webhook: str) -> str:
    """How a webhook is named in logs and in ``alerts``: never its URL, which may hold a token."""
    return "sha256:" + hashlib.sha256(webhook.encode()).hexdigest()[:12]


def resolve_webhook(webhook: str) -> tuple[str | None, str]:
    """``(url, name)``: a ``${NAME}`` webhook read from the environment (``None`` when unset)."""
    found = ENV_WEBHOOK.fullmatch(webhook)
    if found is None:
        return webhook, fingerprint(webhook)
    url = os.environ.get(found.group(1)) or None
    return url, fingerprint(url) if url else webhook


def payload(event: Event, pipeline: str, report_url: str) -> dict:
    """The JSON body of an alert; ``text`` is what Slack and Teams incoming webhooks show."""
    return {"event": event.event, "pipeline": pipeline, "block": event.block, "summary": event.summary,
            "report_url": report_url, "at": event.at,
            "text": f"calmops {event.event}: {event.summary} Report: {report_url}", "details": event.details}


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:  # an HTTP date: the usual backoff instead
        return None


def deliver(url: str, body: dict, config: AlertsConfig, sleep=time.sleep) -> Delivery:
    """POST ``body`` to ``url``, trying ``config.max_attempts`` times on timeouts, connection errors, 5xx,
    408, 425 and 429, with waits of ``retry_seconds`` doubling (or ``Retry-After``). Never raises; the error
    text never holds the URL."""
    data = json.dumps(body, default=str).encode()
    status, error = None, None
    for attempt in range(1, config.max_attempts + 1):
        wait = None
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "calmops-alerts/1"})
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_seconds) as response:
                response.read(65536)
                return Delivery(SENT, attempt, response.status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
            retry, wait = exc.code >= 500 or exc.code in RETRY_STATUSES, _retry_after(exc.headers)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # refused, reset, timed out, bad URL
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            status, error, retry = None, f"{type(reason).__name__}: {reason}", not isinstance(exc, ValueError)
        error = error.replace(url, "<webhook>")
        if not retry or attempt == config.max_attempts:
            return Delivery(FAILED, attempt, status, error)
        sleep(min(wait if wait is not None else config.retry_seconds * 2 ** (attempt - 1), MAX_WAIT_SECONDS))
    return Delivery(FAILED, config.max_attempts, status, error)


def _block_report_url(home: CalmOpsHome, pipeline: str, event: Event) -> str:
    """The block's drift report for a drift event (when written), else the pipeline report."""
    if event.event == "drift" and (home.reports_dir(pipeline) / f"{event.block}.html").is_file():
        return reports_url(pipeline, event.block)
    return reports_url(pipeline)


def send_block_alerts(spec: PipelineSpec, home: CalmOpsHome, metrics: MetricsStore, block: str | None,
                      failed_checks: dict[str, str] | None = None, logger=None, sleep=time.sleep) -> list[dict]:
    """Send the alerts of ``block`` not sent yet (module docstring) and return the ``alerts`` rows written.

    ``failed_checks``: the block's asset checks that failed (name -> what failed), which DuckDB does not hold.
    Never raises: whatever goes wrong is logged (without any URL) and the block goes on."""
    logger = logger or log
    config = spec.alerts
    if block is None or not config.events:
        return []
    try:
        return _send(spec, home, metrics, str(block), failed_checks or {}, logger, sleep)
    except Exception as exc:  # noqa: BLE001 -- an alert must never fail the block
        text = str(exc)
        for webhook in config.webhooks:
            text = text.replace(resolve_webhook(webhook)[0] or webhook, "<webhook>")
        logger.warning(f"alerts of block {block} not sent: {type(exc).__name__}: {text}")
        return []


def _send(spec: PipelineSpec, home: CalmOpsHome, metrics: MetricsStore, block: str, failed_checks: dict[str, str],
          logger, sleep) -> list[dict]:
    config = spec.alerts
    record = read_block_records(spec, home, metrics, block)[block]
    events = [e for e in block_events(spec, replace(record, failed_checks=failed_checks))
              if e.event in config.events]
    if not events:
        return []
    done = metrics.query("SELECT DISTINCT event, webhook FROM alerts WHERE pipeline = ? AND block = ? AND status "
                         f"IN ({', '.join('?' * len(DONE))})", [spec.name, block, *DONE], pipeline=spec.name)
    done = set(zip(done["event"], done["webhook"], strict=True))
    hooks = [resolve_webhook(w) for w in config.webhooks] or [(None, None)]
    rows = []
    for event in events:
        report_url = _block_report_url(home, spec.name, event)
        for url, name in hooks:
            if (event.event, name) in done:
                continue
            if name is None:
                outcome = Delivery(NO_WEBHOOK, 0)
            elif url is None:
                outcome = Delivery(FAILED, 0, error=f"environment variable of {name} is not set")
            else:
                outcome = deliver(url, payload(event, spec.name, report_url), config, sleep)
            rows.append({"pipeline": spec.name, "block": block, "event": event.event, "summary": event.summary,
                         "report_url": report_url, "webhook": name, "status": outcome.status,
                         "attempts": outcome.attempts, "http_status": outcome.http_status, "error": outcome.error,
                         "event_at": event.at, "sent_at": datetime.now(UTC).isoformat()})
            if name is not None:
                said = (f"alert {event.event} of block {block} sent to webhook {name}" if outcome.status == SENT
                        else f"alert {event.event} of block {block} NOT sent to webhook {name} after "
                             f"{outcome.attempts} attempt(s): {outcome.error}")
                (logger.info if outcome.status == SENT else logger.warning)(said)
    if rows:
        metrics.append_rows("alerts", rows)
    return rows
