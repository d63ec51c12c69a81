"""A plotly HTML report of one block's drift, viewable offline.

With ``plotlyjs="embed"`` (the default) the file embeds plotly.js (~4.8 MB) and opens anywhere without
internet or a sibling file. The pipeline writes one report per block, so it uses ``plotlyjs="directory"``:
each report references one shared ``plotly.min.js`` written once beside it (a report folder of a
thousand blocks then weighs a few MB instead of ~5 GB), and the folder stays self-contained. It holds: corrected p-values and effect
sizes per feature, reference vs current distributions of the most drifted features, the multivariate
results, and, when a history of past summaries is given, drift share and drifted-feature counts across
blocks. The file is written to a temporary name and renamed, so a reader never sees half a report.
"""

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from calmops_dagster.drift.report import NOT_TESTED, DriftReport
from calmops_dagster.store.atomic import write_text_atomic

PLOTLY_JS = "plotly.min.js"

#: Rows sampled per side for the distribution plots (keeps the file small on large blocks).
PLOT_SAMPLE = 5000


def _pvalue_figure(rows: pd.DataFrame) -> go.Figure:
    tested = rows[(rows["test"] != NOT_TESTED)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("-log10 corrected p-value", "effect size / threshold"))
    for test, part in tested.groupby("test", sort=False):
        if part["p_adjusted"].notna().any():
            fig.add_bar(x=part["feature"], y=-np.log10(part["p_adjusted"].clip(lower=1e-300)), name=f"{test} p",
                        row=1, col=1)
        fig.add_bar(x=part["feature"], y=part["effect_size"] / part["threshold"], name=f"{test} effect",
                    row=1, col=2)
    alpha = tested["alpha"].dropna()
    if len(alpha):
        fig.add_hline(y=-np.log10(alpha.iloc[0]), line_dash="dash", row=1, col=1)
    fig.add_hline(y=1.0, line_dash="dash", row=1, col=2)
    fig.update_layout(barmode="group", height=420, title="Per-feature tests (above the dashed line = past the bar)")
    return fig


def _distribution_figure(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, top: int) -> go.Figure | None:
    features = [f for f in report.drifted_features if f in reference and f in current][:top]
    if not features:
        return None
    fig = make_subplots(rows=len(features), cols=1, subplot_titles=features)
    rng = np.random.default_rng(0)
    for i, name in enumerate(features, start=1):
        kind = report.rows.loc[report.rows["feature"] == name, "kind"].iloc[0]
        for label, df, color in (("reference", reference, "#1f77b4"), ("current", current, "#d62728")):
            s = df[name].dropna()
            if len(s) > PLOT_SAMPLE:
                s = s.iloc[rng.choice(len(s), PLOT_SAMPLE, replace=False)]
            if kind == "categorical":
                freq = s.astype(str).value_counts(normalize=True).sort_index()
                fig.add_bar(x=freq.index, y=freq.values, name=label, marker_color=color, showlegend=i == 1,
                            row=i, col=1)
            else:
                fig.add_histogram(x=s, name=label, histnorm="probability density", opacity=0.6,
                                  marker_color=color, showlegend=i == 1, row=i, col=1)
    fig.update_layout(barmode="overlay", height=280 * len(features), title="Reference vs current, most drifted")
    return fig


def _history_figure(history: pd.DataFrame) -> go.Figure:
    x = history.get("block", history.index)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=x, y=history["drift_share"], mode="lines+markers", name="drift share")
    if "n_drifted" in history:
        fig.add_bar(x=x, y=history["n_drifted"], name="drifted features", opacity=0.4, secondary_y=True)
    if "drift_detected" in history:
        hit = history["drift_detected"].astype(bool)
        fig.add_scatter(x=np.asarray(x)[hit], y=history["drift_share"][hit], mode="markers", name="block drifted",
                        marker={"symbol": "x", "size": 12, "color": "red"})
    fig.update_layout(height=360, title="Drift across blocks")
    return fig


def write_drift_report_html(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, path,
                            history: pd.DataFrame | None = None, title: str = "Drift report", top: int = 6,
                            plotlyjs: str = "embed") -> Path:
    """Write the block's drift report as one self-contained HTML file, atomically.

    Parameters
    ----------
    report : DriftReport
        From :func:`calmops_dagster.drift.detect_drift` on ``reference`` and ``current``.
    reference, current : pandas.DataFrame
        The data compared, for the distribution plots (sampled to ``PLOT_SAMPLE`` rows per side).
    path : str or Path
        Output file; its directory is created if needed.
    history : pandas.DataFrame, optional
        Past summaries, one row per block in order, with at least ``drift_share`` (optionally ``block``,
        ``n_drifted``, ``drift_detected``), e.g. the rows of the DuckDB summary table.
    title : str
    top : int
        Number of drifted features whose distributions are drawn.
    plotlyjs : {"embed", "directory"}
        Embed plotly.js in the file, or reference a ``plotly.min.js`` written once in the same folder.

    Returns
    -------
    Path
        The written file.
    """
    if plotlyjs not in ("embed", "directory"):
        raise ValueError(f"plotlyjs must be 'embed' or 'directory', got {plotlyjs!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "directory" and not (path.parent / PLOTLY_JS).is_file():
        _write_atomic(path.parent / PLOTLY_JS, get_plotlyjs())
    figures = [_pvalue_figure(report.rows)]
    dist = _distribution_figure(report, reference, current, top)
    if dist is not None:
        figures.append(dist)
    if history is not None and len(history) and "drift_share" in history:
        figures.append(_history_figure(history))
    summary = report.summary()
    verdict = "DRIFT" if report.drift_detected else "no drift"
    parts = [
        (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         + (f"<script src='{PLOTLY_JS}'></script>" if plotlyjs == "directory" else "") + "</head>"
         "<body style='font-family:sans-serif'>"),
        f"<h1>{html.escape(title)}: {verdict}</h1><p>{html.escape(report.decision_note)}</p>",
        "<h2>Summary</h2>" + pd.Series(summary, dtype=object).to_frame("value").to_html(),
    ]
    for i, fig in enumerate(figures):
        include = (i == 0) if plotlyjs == "embed" else False
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include))
    frame = report.to_frame()
    parts.append("<h2>All tests</h2>" + frame.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    if report.multivariate_note:
        parts.append(f"<p>Multivariate: {html.escape(report.multivariate_note)}</p>")
    parts.append("</body></html>")
    _write_atomic(path, "\n".join(parts))
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it, readable by the web UI (0644)."""
    write_text_atomic(path, text)
    os.chmod(path, 0o644)
