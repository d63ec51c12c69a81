"""The landing page of ``calmops serve`` (``/``): every pipeline on one page, one row each.

Per pipeline: its champion and the block that made it champion, the last block processed and when, drift on
that block, the latest estimated (label-free, with its interval) and realized performance of the primary
metric, the circuit breaker's state, the last alert, and a link to its report (``/reports/<name>/``). Read
from DuckDB and the model store on each request (:func:`pipeline_row`); a pipeline whose spec, champion
pointer or metrics cannot be read shows why in its row, and the others are listed anyway.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.reports.page_style import MISSING, fmt, is_missing, page
from calmops_dagster.spec import load_spec
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

#: The landing page's reads of one pipeline, on one connection over its own files.
LAST_BLOCK_SQL = ("SELECT b.block, b.loaded_at, s.drift_detected, s.drift_share, s.n_drifted, s.n_tested, "
                  "s.drifted_features FROM blocks b LEFT JOIN drift_summary s USING (pipeline, block) "
                  "WHERE b.pipeline = ? ORDER BY b.loaded_at DESC LIMIT 1")
PROCESSED_SQL = "SELECT count(*) AS n FROM blocks WHERE pipeline = ?"
LATEST_SQL = ("SELECT p.block, p.model_version, p.value, p.ci_low, p.ci_high FROM performance p "
              "JOIN blocks b USING (pipeline, block) WHERE p.pipeline = ? AND p.evaluated_on = 'block' "
              "AND p.metric = ? AND p.role IN ({roles}) ORDER BY b.loaded_at DESC LIMIT 1")
LAST_ALERT_SQL = ("SELECT block, event, summary, status, event_at FROM alerts WHERE pipeline = ? "
                  "ORDER BY event_at DESC, sent_at DESC LIMIT 1")


@dataclass
class PipelineRow:
    """One pipeline's line on the landing page as display-ready text: each cell a value and a note under it
    (``—`` where there is nothing)."""

    name: str
    description: str = MISSING
    champion: tuple[str, str] = (MISSING, "")
    last_block: tuple[str, str] = (MISSING, "")
    drift: tuple[str, str] = (MISSING, "")
    drift_state: str = ""
    """``bad`` (drift), ``ok`` (no drift) or empty: how the drift cell is coloured."""
    estimated: tuple[str, str] = (MISSING, "")
    realized: tuple[str, str] = (MISSING, "")
    breaker: tuple[str, str] = (MISSING, "")
    breaker_open: bool = False
    last_alert: tuple[str, str] = (MISSING, "")
    alert_detail: str = ""
    """The last alert's sentence (the cell's tooltip)."""
    error: str | None = None


def _first(frame):
    return None if frame.empty else frame.iloc[0]


def _performance(row, interval: bool) -> tuple[str, str]:
    if row is None:
        return MISSING, ""
    text = fmt(row["value"])
    if interval and not is_missing(row["ci_low"]):
        text += f" [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    return text, f"block {row['block']} · {row['model_version']}"


def pipeline_row(home: CalmOpsHome, name: str, now: datetime | None = None) -> PipelineRow:
    """The landing page's row of pipeline ``name`` (never raises for a pipeline that cannot be read: its row
    says why)."""
    row = PipelineRow(name)
    try:
        spec = load_spec(home.spec_path(name))
    except CalmOpsError as exc:
        row.error = f"spec not readable: {exc}"
        return row
    metric = spec.performance.metric
    row.description = f"{spec.type} · {spec.model_spec.class_name} · {metric or 'no metric'}"
    try:
        store = ModelStore(home.models_dir(name))
        champion, history = store.champion_version(), store.champion_history()
        since = next((h for h in reversed(history) if h["version"] == champion), None)
        row.champion = (champion or "none yet", f"since block {since['block']}" if since else "")
    except (CalmOpsError, OSError, ValueError) as exc:
        row.error = f"champion pointer not readable: {exc}"
    metrics = MetricsStore(home.metrics_db, max_wait_seconds=2.0)
    now = now or datetime.now(UTC)
    try:
        last, processed, estimated, realized, alert = (_first(f) for f in metrics.queries([
            (LAST_BLOCK_SQL, [name]), (PROCESSED_SQL, [name]),
            (LATEST_SQL.format(roles="'estimated'"), [name, metric]),
            (LATEST_SQL.format(roles="'champion', 'realized'"), [name, metric]),
            (LAST_ALERT_SQL, [name]),
        ], pipeline=name))
        state = metrics.breaker_state(name)
    except Exception as exc:  # noqa: BLE001 -- the page must list the other pipelines whatever this one holds
        row.error = f"metrics not readable: {type(exc).__name__}: {exc}"
        return row
    if last is not None:
        row.last_block = (str(last["block"]), f"{fmt(last['loaded_at'])} · {int(processed['n'])} processed")
        if not is_missing(last["drift_detected"]):
            drifted = bool(last["drift_detected"])
            features = str(last["drifted_features"] or "").replace(",", ", ")
            share = f"share {fmt(last['drift_share'])}"
            row.drift = ((f"drift: {int(last['n_drifted'])} of {int(last['n_tested'])} features",
                          f"{features}; {share}" if features else share) if drifted else ("no drift", share))
            row.drift_state = "bad" if drifted else "ok"
    row.estimated, row.realized = _performance(estimated, True), _performance(realized, False)
    state_now = circuit_breaker.effective(state, now)
    row.breaker = (circuit_breaker.describe(state, now),
                   f"{state_now.consecutive_failures} consecutive failures" if state_now.is_open else "")
    row.breaker_open = state_now.is_open
    if alert is not None:
        delivery = "" if alert["status"] == "sent" else f" · {str(alert['status']).replace('_', ' ')}"
        row.last_alert = (f"{alert['event']} · block {alert['block']}", f"{fmt(alert['event_at'])}{delivery}")
        row.alert_detail = str(alert["summary"])
    return row


def _cell(value: tuple[str, str], css: str = "", title: str = "") -> str:
    attributes = (f" class='{css}'" if css else "") + (f" title='{html.escape(title, quote=True)}'" if title else "")
    main, note = value
    below = f"<br><span class='muted note'>{html.escape(note)}</span>" if note else ""
    return f"<td{attributes}><span class='value'>{html.escape(main)}</span>{below}</td>"


def build_landing_page(home: CalmOpsHome, names: list[str], key: str | None = None) -> str:
    """The landing page listing ``names``; ``key`` (the ``?key=`` the page was opened with) is carried into
    the report links, so they open without a header too."""
    rows = [pipeline_row(home, name) for name in names]
    suffix = f"?key={quote(key)}" if key else ""
    head = ("<tr><th>pipeline</th><th>champion</th><th>last block</th><th>drift on the last block</th>"
            "<th>estimated (latest)</th><th>realized (latest)</th><th>circuit breaker</th><th>last alert</th></tr>")
    body = []
    for row in rows:
        link = f"<a href='/reports/{quote(row.name)}/{suffix}'>{html.escape(row.name)}</a>"
        first = (f"<td><b>{link}</b><br><span class='muted note'>{html.escape(row.description)}</span>"
                 + (f"<br><span class='bad'>{html.escape(row.error)}</span>" if row.error else "") + "</td>")
        body.append("<tr>" + first + _cell(row.champion) + _cell(row.last_block) + _cell(row.drift, row.drift_state)
                    + _cell(row.estimated) + _cell(row.realized) + _cell(row.breaker, "bad" if row.breaker_open else "")
                    + _cell(row.last_alert, "", row.alert_detail) + "</tr>")
    table = (f"<div class='table-wrap'><table id='pipelines'><thead>{head}</thead><tbody>{''.join(body)}</tbody>"
             "</table></div>" if rows else "<p class='muted'>no pipeline yet: <code>calmops init NAME</code></p>")
    intro = (f"<h1>calmops pipelines</h1><p class='muted'>{len(rows)} pipeline{'s' if len(rows) != 1 else ''} of "
             f"{html.escape(str(home.root))} · read now from DuckDB and the model store · estimated and realized: "
             "the champion's primary metric on a block, estimated without labels (with its interval) and measured "
             "with them · <a href='/docs'>API docs</a></p>")
    return page("calmops pipelines", intro + table)
