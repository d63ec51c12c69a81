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

from calmops_dagster.drift.report import (
    DATASET,
    EXTRA_COLUMNS,
    FRAME_COLUMNS,
    MULTIVARIATE,
    NOT_TESTED,
    DriftReport,
)
from calmops_dagster.store.atomic import write_text_atomic

PLOTLY_JS = "plotly.min.js"

#: Rows sampled per side for the distribution plots (keeps the file small on large blocks).
PLOT_SAMPLE = 5000


def _pvalue_figure(rows: pd.DataFrame) -> go.Figure:
    """Per-feature bars from the univariate rows of the results frame (the drift_results rows)."""
    tested = rows[(rows["test"] != NOT_TESTED)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("-log10 corrected p-value (hypothesis tests only)",
                                                        "effect size / threshold (every test)"))
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


def fmt(value) -> str:
    """How every number of the report is shown: 3 significant digits, a dash for a missing value."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value)


def _table(frame: pd.DataFrame, table_id: str) -> str:
    """An HTML table of ``frame`` with every cell through :func:`fmt` (one formatting for the page)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table id='{table_id}' border='1' class='dataframe'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    """The summary rows, read from the results frame: the dataset decision and each multivariate test."""
    dataset = results[results["feature"] == DATASET].iloc[0]
    features = results[~results["feature"].astype(str).str.startswith("__") & (results["test"] != NOT_TESTED)]
    drifted = features.loc[features["drifted"].astype(bool), "feature"].unique()
    rows = [("block drifted", bool(dataset["drifted"])),
            ("drift share (drifted / tested features)", float(dataset["statistic"])),
            ("drifted features", f"{len(drifted)} of {features['feature'].nunique()}: {', '.join(drifted) or 'none'}"),
            ("smallest corrected univariate p-value", float(dataset["p_value"]))]
    for mv in results[results["feature"] == MULTIVARIATE].itertuples():
        rows += [(f"{mv.test}: statistic", float(mv.statistic)), (f"{mv.test}: p-value", float(mv.p_value)),
                 (f"{mv.test}: alpha", float(mv.alpha)), (f"{mv.test}: drifted", bool(mv.drifted))]
    return pd.DataFrame(rows, columns=["", "value"])


def _legend(results: pd.DataFrame) -> str:
    """How to read the page: the alpha split, corrected p-values, distances without a p-value, the rows."""
    univariate = results[~results["feature"].astype(str).str.startswith("__") & (results["test"] != NOT_TESTED)]
    mv = results[results["feature"] == MULTIVARIATE]
    uni_alpha = univariate["alpha"].dropna()
    uni = float(uni_alpha.iloc[0]) if len(uni_alpha) else float("nan")
    block_alpha = uni + float(mv["alpha"].sum()) if len(mv) else uni
    distances = sorted(set(univariate.loc[univariate["p_value"].isna(), "test"]))
    split = (f"The block's alpha ({fmt(block_alpha)}, the chance of a false alarm on a block without drift) is "
             f"split (Bonferroni) between the univariate tests, which share {fmt(uni)}, and the "
             f"{len(mv)} multivariate tests, {fmt(float(mv['alpha'].iloc[0]))} each "
             "(<code>drift.multivariate_alpha_share</code>)." if len(mv) else
             f"alpha = {fmt(uni)} for the univariate tests (multivariate tests off or not run).")
    items = [
        split,
        ("<b>p_value</b> is the test's own p-value; <b>p_adjusted</b> is the p-value corrected across every "
        "p-valued row of the block (the spec's <code>drift.correction</code>), compared with <b>alpha</b>."),
        (f"Distance tests ({', '.join(distances)}) have no p-value (shown as —): such a row counts as drifted "
         "only when its effect reaches the threshold and the same feature is significant on a hypothesis test."
         if distances else "Every univariate test run here has a p-value."),
        ("A row is <b>drifted</b> when p_adjusted &lt; alpha and effect_size ≥ threshold (effect size / "
        "threshold ≥ 1 in the right-hand chart). The block drifts when the share of drifted features reaches "
        "<code>drift.min_drift_share</code> or a multivariate test fires."),
        ("Rows: <code>__multivariate__</code> = MMD (permutation p-value) and the domain classifier (AUC, "
        "p-value of the out-of-fold scores); <code>__dataset__</code> = the decision, statistic = drift share, "
        "p_value = the smallest corrected univariate p-value; <code>__performance__</code> = the champion's "
        "metric on the block against its reference (bootstrap CI in the note); <code>__error_stream__</code> = "
        "a streaming detector over the champion's errors (statistic = the row where it fired)."),
        ("These are the rows of the block in DuckDB <code>drift_results</code>; every number on this page is "
        "read from them and shown with 3 significant digits."),
    ]
    return "<h2>How to read this report</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def write_drift_report_html(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, path,
                            history: pd.DataFrame | None = None, title: str = "Drift report", top: int = 6,
                            plotlyjs: str = "embed", results: pd.DataFrame | None = None) -> Path:
    """Write the block's drift report as one HTML file, atomically.

    Every number on the page comes from one frame, ``results`` (what the pipeline writes to DuckDB
    ``drift_results``), and is formatted by :func:`fmt`; a legend says how to read it.

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
    results : pandas.DataFrame, optional
        The block's result rows (default ``report.to_frame()``); the pipeline passes the rows it stores,
        performance and error-stream rows included.

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
    results = (report.to_frame() if results is None else results).reindex(
        columns=FRAME_COLUMNS + EXTRA_COLUMNS)
    univariate = results[~results["feature"].astype(str).str.startswith("__")]
    figures = [(_pvalue_figure(univariate),
                ("Left: the corrected p-value of each hypothesis test (higher = more significant; the dashed "
                "line is the univariate alpha). Distance tests have no p-value and appear only on the right. "
                "Right: effect size over its threshold (dashed line at 1)."))]
    dist = _distribution_figure(report, reference, current, top)
    if dist is not None:
        figures.append((dist, (f"Reference (blue: the champion's training rows) vs current (red: this block), "
                              f"for up to {top} drifted features; at most {PLOT_SAMPLE} rows per side.")))
    if history is not None and len(history) and "drift_share" in history:
        figures.append((_history_figure(history), ("Drift share of each processed block (line), drifted "
                        "features (bars, right axis), blocks whose decision was drift (red x).")))
    dataset = results[results["feature"] == DATASET].iloc[0]
    verdict = "DRIFT" if bool(dataset["drifted"]) else "no drift"
    parts = [
        (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         + (f"<script src='{PLOTLY_JS}'></script>" if plotlyjs == "directory" else "") + "</head>"
         "<body style='font-family:sans-serif'>"),
        f"<h1>{html.escape(title)}: {verdict}</h1><p id='decision'>{html.escape(str(dataset['note']))}</p>",
        "<h2>Summary</h2>" + _table(_summary(results), "summary"),
        _legend(results),
    ]
    for i, (fig, caption) in enumerate(figures):
        include = (i == 0) if plotlyjs == "embed" else False
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include))
        parts.append(f"<p class='caption'><i>{html.escape(caption)}</i></p>")
    parts.append("<h2>All tests</h2>" + _table(results, "all-tests"))
    if report.multivariate_note:
        parts.append(f"<p>Multivariate: {html.escape(report.multivariate_note)}</p>")
    parts.append("</body></html>")
    _write_atomic(path, "\n".join(parts))
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it, readable by the web UI (0644)."""
    write_text_atomic(path, text)
    os.chmod(path, 0o644)
