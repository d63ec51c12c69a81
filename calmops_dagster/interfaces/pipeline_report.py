"""``calmops report NAME`` and ``calmops serve``'s ``/reports/NAME/``: one HTML page about a pipeline.

Read from DuckDB and the model store when asked. Sections: the pipeline at a glance; the champion's
estimated performance per block (label-free, with its confidence band) beside the realized value once labels
are known, the alert threshold and markers where the estimate fell below it (NannyML's CBPE plot); the
champion's primary metric per block with challengers and promotions; the champion timeline (which version
served which blocks, and why it changed); drift per feature over blocks (heatmap: the share of a feature's
tests that flagged drift) with a drill-down (a feature's distribution per block against the reference it
was judged against; click a heatmap cell or pick the feature); the latest block's drift; the alerts; the
re-evaluations; the circuit breaker; the champion history.

Written to a file, the page embeds plotly.js once (about 4.8 MB) and works offline; served, it loads the
installed plotly.js from ``calmops serve`` (:data:`~calmops_dagster.reports.page_style.PLOTLY_ROUTE`). No
CDN either way. Looks: :mod:`calmops_dagster.reports.page_style`, shared with the landing page and the
block reports.
"""

from __future__ import annotations

import functools
import html
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.interfaces.alerts import drop_threshold, estimated_drop_event
from calmops_dagster.reports.page_style import MISSING, fmt, html_table, page, plotly_script
from calmops_dagster.spec import PipelineSpec, load_spec
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.store.atomic import write_readable_text_atomic
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.storage import Location, as_location, read_parquet

#: The drill-down reads the kept rows of at most this many blocks (the latest), one file each.
DRILLDOWN_BLOCKS = 60
#: Categories drawn per categorical feature in the drill-down (the reference's most frequent).
DRILLDOWN_CATEGORIES = 8
ESTIMATE_COLOR, REALIZED_COLOR, ALERT_COLOR = "#1f5fa8", "#1b6e3a", "#b3261e"


@functools.cache
def _white_template() -> dict:
    """plotly's ``plotly_white`` template as plain data, made once: set on each figure through the graph
    objects it was deep-copied and validated again every time (most of the page's build time)."""
    return pio.templates["plotly_white"].to_plotly_json()


def _figure_div(fig: go.Figure, div_id: str) -> str:
    """A ``div`` plotly.js draws from ``fig`` (white template, the page's margins); ``</`` is escaped so no
    text in the figure ends the script."""
    figure = fig.to_plotly_json()
    layout = {**figure["layout"], "template": _white_template(), "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}
    spec = pio.json.to_json_plotly({"data": figure["data"], "layout": layout}).replace("</", "<\\/")
    height = layout.get("height") or 450
    config = json.dumps({"displaylogo": False, "responsive": True})
    return (f"<div id='{div_id}' class='plotly-graph-div' style='height:{height}px; width:100%;'></div>"
            f"<script>(function () {{ const f = {spec}; "
            f"Plotly.newPlot('{div_id}', f.data, f.layout, {config}); }})();</script>")


def _ordered(blocks) -> list[str]:
    return sort_block_keys(pd.Series(sorted(set(blocks)), dtype=str))


def load_report_data(home: CalmOpsHome, name: str) -> dict[str, pd.DataFrame]:
    """Everything the page shows from DuckDB (read-only; one connection over the pipeline's own files)."""
    metrics = MetricsStore(home.metrics_db)
    statements = {
        "drift": "SELECT block, feature, test, statistic, p_value, effect_size, threshold, drifted, note "
                 "FROM drift_results WHERE pipeline = ?",
        "summary": "SELECT * FROM drift_summary WHERE pipeline = ?",
        "performance": "SELECT block, model_version, role, evaluated_on, metric, value, ci_low, ci_high "
                       "FROM performance WHERE pipeline = ?",
        "promotions": "SELECT block, decision, champion_before, challenger, champion_after, reason, metric, "
                      "champion_score, challenger_score, trained_by, decided_at FROM promotions WHERE pipeline = ? "
                      "ORDER BY decided_at",
        "blocks": "SELECT block, rows, loaded_at FROM blocks WHERE pipeline = ?",
        "reevaluations": "SELECT reevaluation_id, block, against, changes, original_reference_version, "
                         "original_drift_detected, drift_detected, original_retrain, retrain, drift_share, reason, "
                         "computed_at FROM reevaluation_summary WHERE pipeline = ? ORDER BY computed_at",
        "breaker": "SELECT * FROM breaker_state WHERE pipeline = ?",
        "alerts": "SELECT block, event, summary, webhook, status, attempts, http_status, error, event_at, sent_at "
                  "FROM alerts WHERE pipeline = ? ORDER BY sent_at DESC",
    }
    frames = metrics.queries([(sql, [name]) for sql in statements.values()], pipeline=name)
    return dict(zip(statements, frames, strict=True))


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


def _references(store: ModelStore, versions, metric: str) -> dict[str, float | None]:
    """Each version's own held-out score of ``metric`` (its manifest): what its estimates are judged against."""
    out = {}
    for version in {v for v in versions if isinstance(v, str)}:
        try:
            value = (store.manifest(version).get("metrics") or {}).get(metric)
        except (OSError, ValueError, KeyError):
            value = None
        out[version] = None if value is None else float(value)
    return out


def estimate_figure(spec: PipelineSpec, performance: pd.DataFrame, references: dict[str, float | None],
                    order: list[str]) -> go.Figure | None:
    """The champion's estimated primary metric per block with its confidence band, the realized value where
    labels were known, the alert threshold (its reference less ``max_relative_drop``), the spec's minimum,
    and a marker where the whole band fell below the threshold (an ``estimated_drop`` alert)."""
    metric, drop = spec.performance.metric, spec.performance.max_relative_drop
    on_block = performance[(performance["evaluated_on"] == "block") & (performance["metric"] == metric)]
    estimated = on_block[on_block["role"] == "estimated"].drop_duplicates("block", keep="last").set_index("block")
    realized = on_block[on_block["role"].isin(["champion", "realized"])].drop_duplicates(
        "block", keep="last").set_index("block")
    blocks = [b for b in order if b in estimated.index or b in realized.index]
    if estimated.empty:
        return None
    est, real = estimated.reindex(blocks), realized.reindex(blocks)
    version = est["model_version"].fillna(real["model_version"])
    threshold = [None if references.get(v) is None else drop_threshold(references[v], drop) for v in version]
    hover = [f"champion {v}<br>band {fmt(lo)} to {fmt(hi)}" for v, lo, hi in
             zip(version, est["ci_low"], est["ci_high"], strict=True)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=blocks, y=est["ci_high"], mode="lines", line={"width": 0}, showlegend=False,
                             hoverinfo="skip", legendgroup="band"))
    fig.add_trace(go.Scatter(x=blocks, y=est["ci_low"], mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor="rgba(31,95,168,0.18)", name="confidence band", hoverinfo="skip",
                             legendgroup="band"))
    fig.add_trace(go.Scatter(x=blocks, y=est["value"], mode="lines+markers", name="estimated (without labels)",
                             line={"color": ESTIMATE_COLOR, "dash": "dash"}, text=hover,
                             hovertemplate="block %{x}<br>estimated %{y:.3f}<br>%{text}<extra></extra>"))
    if real["value"].notna().any():
        fig.add_trace(go.Scatter(x=blocks, y=real["value"], mode="lines+markers", name="realized (with labels)",
                                 line={"color": REALIZED_COLOR}, text=real["model_version"],
                                 hovertemplate="block %{x}<br>realized %{y:.3f} (%{text})<extra></extra>"))
    if any(t is not None for t in threshold):
        fig.add_trace(go.Scatter(x=blocks, y=threshold, mode="lines", name=f"alert threshold (reference - {drop:.0%})",
                                 line={"color": ALERT_COLOR, "dash": "dot", "shape": "hv"},
                                 hovertemplate="block %{x}<br>threshold %{y:.3f}<extra></extra>"))
    minimum = spec.performance.thresholds.get(metric)
    if minimum is not None:
        fig.add_trace(go.Scatter(x=blocks, y=[minimum] * len(blocks), mode="lines", name=f"minimum ({minimum:g})",
                                 line={"color": "#6b7785", "dash": "longdash"}, hoverinfo="skip"))
    alerts = [(b, event) for b in blocks if b in estimated.index and (event := estimated_drop_event(
        spec, b, {**estimated.loc[b].to_dict(), "reference": references.get(estimated.loc[b, "model_version"])}))]
    if alerts:
        fig.add_trace(go.Scatter(x=[b for b, _ in alerts], y=[est.loc[b, "value"] for b, _ in alerts], mode="markers",
                                 name="alert: estimated drop", text=[html.escape(e.summary) for _, e in alerts],
                                 marker={"symbol": "diamond", "size": 14, "color": ALERT_COLOR,
                                         "line": {"width": 1, "color": "#fff"}},
                                 hovertemplate="block %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(title=f"Estimated {metric} per block (no labels needed) and realized", height=400,
                      xaxis_title="block", yaxis_title=metric, hovermode="closest",
                      xaxis={"type": "category", "categoryorder": "array", "categoryarray": blocks},
                      legend={"orientation": "h", "y": -0.22})
    return fig


def champion_timeline_figure(promotions: pd.DataFrame, order: list[str]) -> go.Figure | None:
    """Which version served (made the predictions of) which blocks, a star where the champion changed with
    the reason in its hover."""
    decided = promotions.drop_duplicates("block", keep="last").set_index("block")
    blocks = [b for b in order if b in decided.index and pd.notna(decided.loc[b, "champion_after"])]
    if not blocks:
        return None
    served = decided.loc[blocks, "champion_after"]
    versions = list(dict.fromkeys(served))
    fig = go.Figure()
    for version in versions:
        y = [version if served[b] == version else None for b in blocks]
        text = [html.escape(f"{decided.loc[b, 'decision']}: {str(decided.loc[b, 'reason'])[:160]}") for b in blocks]
        fig.add_trace(go.Scatter(x=blocks, y=y, mode="lines+markers", name=version, connectgaps=False,
                                 line={"width": 10}, marker={"size": 10, "symbol": "square"}, text=text,
                                 hovertemplate=f"block %{{x}}: {version}<br>%{{text}}<extra></extra>"))
    changes = decided.loc[blocks][decided.loc[blocks, "decision"].isin(["promoted", "rolled_back"])]
    fig.add_trace(go.Scatter(
        x=list(changes.index), y=list(changes["champion_after"]), mode="markers", name="champion changed",
        marker={"symbol": "star", "size": 18, "color": "#f2b01e", "line": {"width": 1, "color": "#5d4037"}},
        text=[html.escape(f"{r.decision}: {r.champion_before or 'none'} → {r.champion_after}<br>{str(r.reason)[:160]}")
              for r in changes.itertuples()],
        hovertemplate="block %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(title="Champion timeline: the version that served each block (stars: changes)",
                      height=160 + 45 * len(versions), xaxis_title="block", showlegend=False,
                      xaxis={"type": "category", "categoryorder": "array", "categoryarray": blocks},
                      yaxis={"type": "category", "categoryorder": "array", "categoryarray": versions})
    return fig


def _numeric_stats(values: pd.Series) -> dict | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return None
    q = np.quantile(values.to_numpy(dtype=float), [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"lowerfence": q[0], "q1": q[1], "median": q[2], "q3": q[3], "upperfence": q[4],
            "mean": float(values.mean())}


def _kind(manifest: dict, feature: str, sample: pd.Series) -> str:
    kind = (manifest.get("feature_kinds") or {}).get(feature)
    if kind:
        return kind
    numeric = pd.api.types.is_numeric_dtype(sample) and not pd.api.types.is_bool_dtype(sample)
    return "numeric" if numeric else "categorical"


def feature_drilldown_figure(home: CalmOpsHome, name: str, summary: pd.DataFrame, store: ModelStore,
                             features: list[str], order: list[str]) -> go.Figure | None:
    """Each feature's distribution per block against the reference the block was judged against (numeric:
    5-25-50-75-95% boxes; categorical: the share of each frequent category), one feature shown at a time
    (a menu; a click on the drift heatmap picks one). Reads the kept rows of the last :data:`DRILLDOWN_BLOCKS`
    blocks."""
    blocks_dir = as_location(home.blocks_dir(name))
    judged = summary.drop_duplicates("block", keep="last").set_index("block")["reference_version"]
    blocks = [b for b in order if (blocks_dir / f"{b}.parquet").exists()][-DRILLDOWN_BLOCKS:]
    if not blocks or not features:
        return None
    rows = {b: read_parquet(blocks_dir / f"{b}.parquet") for b in blocks}
    references, manifests = {}, {}
    for version in {v for v in judged.reindex(blocks) if isinstance(v, str)}:
        try:
            references[version], manifests[version] = store.reference(version), store.manifest(version)
        except (OSError, ValueError, KeyError):
            continue
    manifest = next(iter(manifests.values()), {})
    fig, owner = go.Figure(), []
    for i, feature in enumerate(features):
        present = [b for b in blocks if feature in rows[b]]
        if not present:
            continue
        ref_of = {b: judged.get(b) if judged.get(b) in references else None for b in present}
        kind = _kind(manifest, feature, rows[present[0]][feature])
        visible = i == 0
        if kind == "numeric":
            for label, source, color in (("reference", "ref", "#8a99ab"), ("block", "block", ESTIMATE_COLOR)):
                stats, xs = [], []
                for b in present:
                    data = rows[b][feature] if source == "block" else (
                        references[ref_of[b]][feature] if ref_of[b] and feature in references[ref_of[b]] else None)
                    found = _numeric_stats(data) if data is not None else None
                    if found:
                        stats.append(found)
                        xs.append(b)
                if not stats:
                    continue
                fig.add_trace(go.Box(x=xs, name=f"{label} ({'the champion’s training rows' if source == 'ref' else 'the block'})",
                                     marker_color=color, visible=visible, boxmean=True,
                                     **{k: [s[k] for s in stats] for k in stats[0]}))
                owner.append(feature)
        else:
            ref_rows = [references[v][feature] for v in set(ref_of.values()) if v and feature in references[v]]
            basis = pd.concat(ref_rows) if ref_rows else pd.concat([rows[b][feature] for b in present])
            top = basis.astype(str).value_counts().index[:DRILLDOWN_CATEGORIES]
            palette = ["#1f5fa8", "#d9822b", "#2e8540", "#b3261e", "#6f42c1", "#8c564b", "#e377c2", "#17a2b8"]
            for j, category in enumerate(top):
                color = palette[j % len(palette)]
                shares = [float((rows[b][feature].astype(str) == category).mean()) for b in present]
                fig.add_trace(go.Bar(x=present, y=shares, name=f"{category} (block)", marker_color=color,
                                     visible=visible, legendgroup=str(category),
                                     hovertemplate=f"block %{{x}}: {html.escape(category)} %{{y:.1%}}<extra></extra>"))
                owner.append(feature)
                ref_x = [b for b in present if ref_of[b] and feature in references[ref_of[b]]]
                if ref_x:
                    ref_y = [float((references[ref_of[b]][feature].astype(str) == category).mean()) for b in ref_x]
                    fig.add_trace(go.Scatter(x=ref_x, y=ref_y, mode="markers", name=f"{category} (reference)",
                                             marker={"symbol": "line-ew-open", "size": 22, "color": color,
                                                     "line": {"width": 3, "color": color}},
                                             visible=visible, legendgroup=str(category), showlegend=False,
                                             hovertemplate=f"reference: {html.escape(category)} %{{y:.1%}}<extra></extra>"))
                    owner.append(feature)
    shown = list(dict.fromkeys(owner))
    if not shown:
        return None
    buttons = [{"label": f, "method": "update",
                "args": [{"visible": [o == f for o in owner]},
                         {"title": {"text": f"{f}: distribution per block against its reference"}}]}
               for f in shown]
    fig.update_layout(title=f"{shown[0]}: distribution per block against its reference", height=420,
                      boxmode="group", barmode="group", xaxis_title="block",
                      xaxis={"type": "category", "categoryorder": "array", "categoryarray": blocks},
                      updatemenus=[{"buttons": buttons, "active": 0, "x": 1.0, "xanchor": "right", "y": 1.18,
                                    "yanchor": "top", "showactive": True}],
                      legend={"orientation": "h", "y": -0.22})
    return fig


#: A click on a cell of the drift heatmap shows that feature in the drill-down (its menu's button).
DRILLDOWN_LINK = """<script>window.addEventListener('load', function () {
  var heat = document.getElementById('drift-heatmap'), drill = document.getElementById('feature-drilldown');
  if (!heat || !drill || !heat.on) { return; }
  heat.on('plotly_click', function (event) {
    var menu = drill.layout.updatemenus[0], feature = event.points[0].y;
    var i = menu.buttons.findIndex(function (b) { return b.label === feature; });
    if (i < 0) { return; }
    var layout = Object.assign({}, menu.buttons[i].args[1], {'updatemenus[0].active': i});
    Plotly.update(drill, menu.buttons[i].args[0], layout);
    drill.scrollIntoView({behavior: 'smooth', block: 'center'});
  });
});</script>"""


def _facts(items: list[tuple[str, str]]) -> str:
    return "<div class='facts'>" + "".join(f"<div>{html.escape(k)}: <b>{v}</b></div>" for k, v in items) + "</div>"


def build_pipeline_report(home: CalmOpsHome, name: str, plotly_src: str | None = None) -> str:
    """The HTML page of pipeline ``name`` (see :func:`write_pipeline_report`). ``plotly_src``: where the page
    loads plotly.js from (``calmops serve``'s route); ``None`` embeds it (a file that works offline)."""
    spec = load_spec(home.spec_path(name))
    data = load_report_data(home, name)
    store = ModelStore(home.models_dir(name))
    champion = store.champion_version()
    metric = spec.performance.metric
    summary, performance, promotions = data["summary"], data["performance"], data["promotions"]
    history = pd.DataFrame(store.champion_history())
    if "at" in history:
        history["at"] = pd.to_datetime(history["at"], utc=True)

    processed = _ordered(data["blocks"]["block"]) if not data["blocks"].empty else []
    order = _ordered(pd.concat([data["blocks"]["block"], summary["block"], promotions["block"]]).astype(str))
    order = [b for b in order if not b.startswith("manual-")]
    since = next((h for h in reversed(store.champion_history()) if h["version"] == champion), None)
    last = data["blocks"].sort_values("loaded_at").iloc[-1] if not data["blocks"].empty else None
    breaker = circuit_breaker.describe(MetricsStore(home.metrics_db).breaker_state(name), pd.Timestamp.now("UTC"))
    sections = [
        ("<nav class='crumbs'><a href='../../'>all pipelines</a></nav>" if plotly_src else "")
        + f"<h1>Pipeline {html.escape(name)}</h1>",
        (f"<p class='muted'>{html.escape(spec.type)} pipeline · {html.escape(spec.model_spec.dotted)} · data "
         f"{html.escape(str(spec.data_dir))}</p>"),
        f"<p>Champion: <b>{html.escape(champion or 'none yet')}</b> · blocks processed: {len(processed)}"
        + (f" ({html.escape(processed[0])} … {html.escape(processed[-1])})" if processed else "") + "</p>",
        _facts([("champion since", html.escape(f"block {since['block']} ({since['decision']})") if since else MISSING),
                ("last block", html.escape(f"{last['block']} at {fmt(last['loaded_at'])}") if last is not None
                 else MISSING),
                ("circuit breaker", html.escape(breaker)), ("primary metric", html.escape(metric))]),
    ]

    references = _references(store, performance["model_version"], metric)
    estimate = estimate_figure(spec, performance, references, order)
    sections.append("<h2>Estimated and realized performance</h2>" + _chart(estimate, "estimated-performance", (
        f"Dashed: the champion's {metric} on each block estimated from its predicted probabilities alone "
        "(no label), with its confidence band. Solid: the realized value where the block came with labels. "
        f"Dotted red: the alert threshold, the champion's own held-out score less "
        f"{spec.performance.max_relative_drop:.0%}; a red diamond marks a block whose whole band fell below it "
        "(an estimated_drop alert).")))

    perf = performance_figure(performance, promotions, metric)
    sections.append(f"<h2>Champion performance ({html.escape(metric)})</h2>" + _chart(perf, "performance", (
        "The champion's score on each block (labels), challengers on their held-out rows, stars at promotions.")))
    sections.append(html_table(without_empty(promotions.drop(columns=["decided_at"]), "trained_by"), "promotions"))

    timeline = champion_timeline_figure(promotions, order)
    changes = promotions[promotions["decision"].isin(["promoted", "rolled_back"])]
    sections.append("<h2>Champion timeline</h2>" + _chart(timeline, "champion-timeline", (
        "Each block on the version that made its predictions (the champion after the block's decision); a star "
        "where the champion changed, with the reason in its hover and below.")))
    sections.append(html_table(changes[["block", "decision", "champion_before", "champion_after", "reason",
                                        "decided_at"]], "champion-changes", empty="no change yet"))

    heatmap = drift_heatmap(data["drift"])
    tested = set(data["drift"].loc[~data["drift"]["feature"].astype(str).str.startswith("__"), "feature"])
    in_model = store.manifest(champion)["features"] if champion else []
    features = [f for f in in_model if f in tested] + sorted(tested - set(in_model))  # the model's order
    drill = feature_drilldown_figure(home, name, summary, store, features, order)
    sections.append("<h2>Drift per feature over blocks</h2>" + _chart(heatmap, "drift-heatmap", (
        "Share of each feature's tests that flagged drift on each block; click a cell to see that feature's "
        "distribution below.")))
    sections.append("<h3>A feature's distribution per block</h3>" + _chart(drill, "feature-drilldown", (
        f"Numeric features: 5-25-50-75-95% boxes (dashed: mean) of each block and of the reference it was "
        f"compared with (the champion's training rows). Categorical: each frequent category's share per block "
        f"(bars) and in the reference (marks). The last {DRILLDOWN_BLOCKS} blocks at most; pick the feature in "
        "the menu.")))

    latest_block = _ordered(summary["block"])[-1] if not summary.empty else None
    latest = latest_drift_figure(data["drift"], latest_block) if latest_block else None
    title = f"Latest drift report (block {latest_block})" if latest_block else "Latest drift report"
    sections.append(f"<h2>{html.escape(title)}</h2>" + _chart(latest, "latest-drift"))
    if latest_block:
        row = summary[summary["block"] == latest_block].iloc[0]
        verdict = ("<span class='bad'>drift</span>" if bool(row["drift_detected"])
                   else "<span class='ok'>no drift</span>")
        link = f" <a href='{html.escape(latest_block)}.html'>block report</a>" if (
            as_location(home.reports_dir(name)) / f"{latest_block}.html").exists() else ""
        sections.append(f"<p>Decision: {verdict}; retrain: {fmt(bool(row['retrain']))}. "
                        f"{html.escape(str(row['reason']))}{link}</p>")
        tests = data["drift"][data["drift"]["block"] == latest_block].drop(columns=["block"])
        sections.append(html_table(tests.sort_values(["feature", "test"]), "latest-tests"))

    sections.append("<h2>Alerts</h2><p class='muted'>The events of each block (docs/alerts.md), newest first, "
                    "with their delivery to each webhook (named by a fingerprint, never its URL).</p>")
    sections.append(html_table(data["alerts"], "alerts", max_rows=50, empty="no alert yet"))
    sections.append("<h2>Re-evaluations</h2><p class='muted'>calmops reevaluate: past blocks judged again "
                    "against another champion and/or settings, beside the original decisions above</p>")
    sections.append(html_table(data["reevaluations"].drop(columns=["computed_at"]), "reevaluations",
                               empty="no re-evaluation yet"))
    sections.append("<h2>Circuit breaker</h2>" + html_table(data["breaker"], "breaker"))
    sections.append("<h2>Champion history</h2>" + html_table(history, "champion-history"))
    sections.append(DRILLDOWN_LINK)
    return page(f"calmops report: {name}", "\n".join(sections), head=plotly_script(plotly_src))


def without_empty(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``frame`` without ``column`` when no row has a value there (``trained_by`` only shows for pipelines
    whose challengers came from the user's ``custom_functions``)."""
    return frame.drop(columns=[column]) if frame[column].isna().all() else frame


def _chart(fig: go.Figure | None, div_id: str, caption: str | None = None) -> str:
    body = _figure_div(fig, div_id) if fig is not None else "<p class='muted'>no data yet</p>"
    note = f"<p class='caption'>{html.escape(caption)}</p>" if caption and fig is not None else ""
    return f"<div class='chart'>{body}</div>{note}"


def write_pipeline_report(home: CalmOpsHome, name: str, out: Location) -> Location:
    """Write the report of ``name`` to ``out`` atomically, readable by everyone (0644, like the per-block
    reports: the temporary file it is renamed from is private); return the path. ``out`` may be in object
    storage (the default place, the pipeline's report folder, is under the storage root)."""
    out = as_location(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_readable_text_atomic(out, build_pipeline_report(home, name))
    return out
