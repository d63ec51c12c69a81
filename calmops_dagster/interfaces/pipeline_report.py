"""``calmops report NAME``: one self-contained HTML page about a pipeline, from DuckDB.

Sections: the champion and its history; drift per feature over blocks (heatmap of the share of a feature's
tests that flagged drift, hover for the smallest p-value and the tests); the champion's primary metric on
every block with the promotion markers (and the challengers' held-out scores); the latest block's drift
report (largest effect size per feature, drifted ones in red, plus the table of every test); and the circuit
breaker's state when a ``breaker_state`` table exists.

plotly.js is embedded once (about 4.8 MB) so the page works on a machine without internet; every chart is a
``<div>`` drawing with that one copy. Tables are plain HTML with escaped values.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.spec import load_spec
from calmops_dagster.store.atomic import write_readable_text_atomic
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.storage import Location, as_location

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1180px;color:#1f2933}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{border:1px solid #d9e2ec;padding:3px 8px;
text-align:left} th{background:#f0f4f8} .muted{color:#627d98} .bad{color:#c62828;font-weight:600}
.ok{color:#2e7d32;font-weight:600} .chart{min-height:200px}
"""


def _table(frame: pd.DataFrame, max_rows: int = 200) -> str:
    if frame.empty:
        return "<p class='muted'>nothing recorded</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.head(max_rows).itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float):
                text = "" if np.isnan(value) else f"{value:.4g}"
            else:
                text = "" if value is None else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_div(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(margin={"l": 60, "r": 20, "t": 50, "b": 50}, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _ordered(blocks) -> list[str]:
    return sort_block_keys(pd.Series(sorted(set(blocks)), dtype=str))


def load_report_data(home: CalmOpsHome, name: str) -> dict[str, pd.DataFrame]:
    """Everything the page shows, read from DuckDB (read-only)."""
    metrics = MetricsStore(home.metrics_db)
    data = {
        "drift": metrics.query("SELECT block, feature, test, statistic, p_value, effect_size, threshold, "
                               "drifted, note FROM drift_results WHERE pipeline = ?", [name], pipeline=name),
        "summary": metrics.query("SELECT * FROM drift_summary WHERE pipeline = ?", [name], pipeline=name),
        "performance": metrics.query("SELECT block, model_version, role, evaluated_on, metric, value "
                                     "FROM performance WHERE pipeline = ?", [name], pipeline=name),
        "promotions": metrics.query("SELECT block, decision, champion_before, challenger, champion_after, reason, "
                                    "metric, champion_score, challenger_score, decided_at FROM promotions "
                                    "WHERE pipeline = ? ORDER BY decided_at", [name], pipeline=name),
        "blocks": metrics.query("SELECT block, rows, loaded_at FROM blocks WHERE pipeline = ?", [name], pipeline=name),
    }
    data["reevaluations"] = metrics.query(
        "SELECT reevaluation_id, block, against, changes, original_reference_version, original_drift_detected, "
        "drift_detected, original_retrain, retrain, drift_share, reason, computed_at FROM reevaluation_summary "
        "WHERE pipeline = ? ORDER BY computed_at", [name], pipeline=name)
    data["breaker"] = metrics.query("SELECT * FROM breaker_state WHERE pipeline = ?", [name], pipeline=name)
    return data


def drift_heatmap(drift: pd.DataFrame) -> go.Figure | None:
    """Share of each feature's tests that flagged drift, per block (features x blocks)."""
    rows = drift[~drift["feature"].astype(str).str.startswith("__")]
    if rows.empty:
        return None
    rows = rows.assign(drifted=rows["drifted"].astype(bool))
    share = rows.pivot_table(index="feature", columns="block", values="drifted", aggfunc="mean")
    min_p = rows.pivot_table(index="feature", columns="block", values="p_value", aggfunc="min")
    flagged = rows[rows["drifted"]].groupby(["feature", "block"])["test"].agg(", ".join)
    blocks = _ordered(share.columns)
    share, min_p = share[blocks], min_p.reindex(index=share.index, columns=blocks)
    text = [[f"{f} · block {b}<br>tests drifted: {flagged.get((f, b), 'none')}<br>smallest p: "
             f"{min_p.loc[f, b]:.3g}" if pd.notna(min_p.loc[f, b]) else f"{f} · block {b}"
             for b in blocks] for f in share.index]
    fig = go.Figure(go.Heatmap(z=share.to_numpy(dtype=float), x=[str(b) for b in blocks], y=list(share.index),
                               zmin=0, zmax=1, colorscale="Reds", text=text, hoverinfo="text",
                               colorbar={"title": "share of<br>tests drifted"}))
    fig.update_layout(title="Drift per feature over blocks", xaxis_title="block", height=140 + 28 * len(share),
                      xaxis={"type": "category"})
    return fig


def performance_figure(performance: pd.DataFrame, promotions: pd.DataFrame, metric: str) -> go.Figure | None:
    perf = performance[performance["metric"] == metric]
    if perf.empty:
        return None
    order = _ordered(pd.concat([perf["block"], promotions["block"]]))
    order = [b for b in order if not str(b).startswith("manual-")]
    fig = go.Figure()
    champion = perf[(perf["role"] == "champion") & (perf["evaluated_on"] == "block")]
    champion = champion.set_index("block").reindex(order).dropna(subset=["value"])
    fig.add_trace(go.Scatter(x=list(champion.index), y=champion["value"], mode="lines+markers",
                             name="champion on the block", text=champion["model_version"],
                             hovertemplate="block %{x}<br>%{text}: %{y:.4f}<extra></extra>"))
    challengers = perf[perf["role"] == "challenger"]
    if not challengers.empty:
        fig.add_trace(go.Scatter(x=challengers["block"], y=challengers["value"], mode="markers", opacity=0.6,
                                 name="challenger (held-out)", text=challengers["model_version"],
                                 marker={"symbol": "circle-open", "size": 9},
                                 hovertemplate="block %{x}<br>%{text}: %{y:.4f}<extra></extra>"))
    promoted = promotions[promotions["decision"].isin(["promoted", "rolled_back"])
                          & promotions["block"].isin(order)]
    if not promoted.empty:
        y = promoted["challenger_score"].astype(float)
        fallback = champion["value"].max() if not champion.empty else 1.0
        y = y.fillna(fallback)
        fig.add_trace(go.Scatter(x=promoted["block"], y=y, mode="markers", name="promotion",
                                 marker={"symbol": "star", "size": 16, "color": "#f9a825",
                                         "line": {"width": 1, "color": "#5d4037"}},
                                 text=[f"{r.decision}: {r.champion_before or '-'} → {r.champion_after}<br>"
                                       f"{html.escape(str(r.reason))[:120]}" for r in promoted.itertuples()],
                                 hovertemplate="block %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(title=f"Champion {metric} over blocks (stars: promotions)", xaxis_title="block",
                      yaxis_title=metric, height=380,
                      xaxis={"type": "category", "categoryorder": "array", "categoryarray": order})
    return fig


def latest_drift_figure(drift: pd.DataFrame, block: str) -> go.Figure | None:
    rows = drift[(drift["block"] == block) & ~drift["feature"].astype(str).str.startswith("__")]
    if rows.empty:
        return None
    per_feature = (rows.assign(drifted=rows["drifted"].astype(bool))
                   .groupby("feature").agg(effect=("effect_size", "max"), drifted=("drifted", "any"))
                   .sort_values("effect", ascending=False))
    fig = go.Figure(go.Bar(x=list(per_feature.index), y=per_feature["effect"],
                           marker_color=["#c62828" if d else "#90a4ae" for d in per_feature["drifted"]],
                           hovertemplate="%{x}: largest effect size %{y:.3g}<extra></extra>"))
    fig.update_layout(title=f"Block {block}: largest effect size per feature (red: drifted)", height=340,
                      yaxis_title="effect size")
    return fig


def build_pipeline_report(home: CalmOpsHome, name: str) -> str:
    """The HTML page of pipeline ``name`` (a string; see :func:`write_pipeline_report`)."""
    spec = load_spec(home.spec_path(name))
    data = load_report_data(home, name)
    store = ModelStore(home.models_dir(name))
    champion = store.champion_version()
    metric = spec.performance.metric
    summary = data["summary"]
    sections, charts = [], []

    processed = _ordered(data["blocks"]["block"]) if not data["blocks"].empty else []
    history = pd.DataFrame(store.champion_history())
    head = (f"<h1>Pipeline {html.escape(name)}</h1><p class='muted'>{html.escape(spec.type)} pipeline · "
            f"{html.escape(spec.model_spec.dotted)} · data {html.escape(str(spec.data_dir))}</p>"
            f"<p>Champion: <b>{html.escape(champion or 'none yet')}</b> · blocks processed: {len(processed)}"
            f"{' (' + html.escape(processed[0]) + ' … ' + html.escape(processed[-1]) + ')' if processed else ''}</p>")
    sections.append(head)

    heatmap = drift_heatmap(data["drift"])
    charts.append(("Drift per feature over blocks", heatmap, "drift-heatmap"))
    perf = performance_figure(data["performance"], data["promotions"], metric)
    charts.append((f"Champion performance ({metric})", perf, "performance"))
    latest_block = None
    if not summary.empty:
        latest_block = _ordered(summary["block"])[-1]
    latest = latest_drift_figure(data["drift"], latest_block) if latest_block else None
    charts.append((f"Latest drift report (block {latest_block})" if latest_block else "Latest drift report",
                   latest, "latest-drift"))

    for title, fig, div_id in charts:
        body = _figure_div(fig, div_id) if fig is not None else "<p class='muted'>no data yet</p>"
        sections.append(f"<h2>{html.escape(title)}</h2><div class='chart'>{body}</div>")
        if div_id == "latest-drift" and latest_block:
            row = summary[summary["block"] == latest_block].iloc[0]
            verdict = ("<span class='bad'>drift</span>" if bool(row["drift_detected"])
                       else "<span class='ok'>no drift</span>")
            sections.append(f"<p>Decision: {verdict}; retrain: {bool(row['retrain'])}. "
                            f"{html.escape(str(row['reason']))}</p>")
            tests = data["drift"][data["drift"]["block"] == latest_block].drop(columns=["block"])
            sections.append(_table(tests.sort_values(["feature", "test"])))
        if div_id == "performance":
            sections.append(_table(data["promotions"].drop(columns=["decided_at"])))

    sections.append("<h2>Re-evaluations</h2><p class='muted'>calmops reevaluate: past blocks judged again "
                    "against another champion and/or settings, beside the original decisions above</p>")
    reevaluations = data["reevaluations"]
    sections.append(_table(reevaluations.drop(columns=["computed_at"]))
                    if not reevaluations.empty
                    else "<p class='muted'>no re-evaluation yet</p>")
    sections.append("<h2>Circuit breaker</h2>")
    sections.append(_table(data["breaker"]))
    sections.append("<h2>Champion history</h2>" + _table(history))

    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>calmops report: {html.escape(name)}</title><style>{STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(sections) + "</body></html>")


def write_pipeline_report(home: CalmOpsHome, name: str, out: Location) -> Location:
    """Write the report of ``name`` to ``out`` atomically, readable by everyone (0644, like the per-block
    reports: the temporary file it is renamed from is private); return the path. ``out`` may be in object
    storage (the default place, the pipeline's report folder, is under the storage root)."""
    out = as_location(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_readable_text_atomic(out, build_pipeline_report(home, name))
    return out
