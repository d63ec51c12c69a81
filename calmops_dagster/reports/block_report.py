"""A plotly HTML report of one block's drift, viewable offline.

With ``plotlyjs="embed"`` (the default) the file embeds plotly.js (~4.8 MB) and opens anywhere without
internet or a sibling file. The pipeline writes one report per block, so it uses ``plotlyjs="directory"``:
each report references one shared ``plotly.min.js`` written once beside it (a report folder of a
thousand blocks then weighs a few MB instead of ~5 GB), and the folder stays self-contained. It holds: corrected p-values and effect
sizes per feature, reference vs current distributions of the most drifted features, the multivariate
results, and, when a history of past summaries is given, drift share and drifted-feature counts across
blocks. The file is written to a temporary name and renamed, so a reader never sees half a report.

The charts are plotly.js figure specifications (``{"data": [...], "layout": {...}}``) written as JSON and
drawn by ``Plotly.newPlot`` in the browser: building them through plotly's Python graph objects validated
every property, a cost each block's run paid again (a new process under ``dagster dev``), for the same page.
"""

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from calmops_dagster.drift.report import (
    DATASET,
    EXTRA_COLUMNS,
    FRAME_COLUMNS,
    MULTIVARIATE,
    NOT_TESTED,
    DriftReport,
)
from calmops_dagster.reports.page_style import fmt, get_plotlyjs, html_table, page, plotly_script
from calmops_dagster.store.atomic import write_readable_text_atomic
from calmops_dagster.store.storage import as_location

PLOTLY_JS = "plotly.min.js"

#: Rows sampled per side for the distribution plots (keeps the file small on large blocks).
PLOT_SAMPLE = 5000


def _values(values) -> list:
    """JSON-ready values: numpy scalars as Python numbers, NaN and infinities as ``null`` (a gap)."""
    out = []
    for value in np.asarray(values, dtype=object).tolist():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out.append(value if isinstance(value, (int, float, bool, type(None))) else str(value))
    return out


def _typed_array(values) -> dict:
    """Numbers as a plotly.js typed-array spec (base64 float64, NaN a gap), as plotly's Python encoder
    writes numpy arrays: thousands of samples per histogram without printing each float."""
    data = np.ascontiguousarray(np.asarray(values, dtype="<f8"))
    return {"dtype": "f8", "bdata": base64.b64encode(data.tobytes()).decode("ascii")}


def _title(text: str, x: float, y: float) -> dict:
    """A subplot title: an annotation above the subplot's domain, as plotly's ``make_subplots`` places it."""
    return {"text": text, "x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": "center",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 14}}


def _hline(y: float, yref: str, xref: str) -> dict:
    """A dashed horizontal line across one subplot at ``y``."""
    return {"type": "line", "xref": f"{xref} domain", "x0": 0, "x1": 1, "yref": yref, "y0": y, "y1": y,
            "line": {"dash": "dash"}}


def _pvalue_figure(rows: pd.DataFrame) -> dict:
    """Per-feature bars from the univariate rows of the results frame (the drift_results rows)."""
    tested = rows[(rows["test"] != NOT_TESTED)]
    data = []
    for test, part in tested.groupby("test", sort=False):
        features = _values(part["feature"].astype(str))
        if part["p_adjusted"].notna().any():
            data.append({"type": "bar", "x": features, "name": f"{test} p", "xaxis": "x", "yaxis": "y",
                         "y": _values(-np.log10(part["p_adjusted"].astype(float).clip(lower=1e-300)))})
        data.append({"type": "bar", "x": features, "name": f"{test} effect", "xaxis": "x2", "yaxis": "y2",
                     "y": _values(part["effect_size"].astype(float) / part["threshold"].astype(float))})
    shapes = [_hline(1.0, "y2", "x2")]
    alpha = tested["alpha"].dropna()
    if len(alpha):
        shapes.insert(0, _hline(float(-np.log10(alpha.iloc[0])), "y", "x"))
    layout = {
        "barmode": "group", "height": 420, "title": {"text": "Per-feature tests (above the dashed line = past the bar)"},
        "xaxis": {"domain": [0.0, 0.45], "anchor": "y"}, "yaxis": {"anchor": "x"},
        "xaxis2": {"domain": [0.55, 1.0], "anchor": "y2"}, "yaxis2": {"anchor": "x2"},
        "shapes": shapes,
        "annotations": [_title("-log10 corrected p-value (hypothesis tests only)", 0.225, 1.0),
                        _title("effect size / threshold (every test)", 0.775, 1.0)],
    }
    return {"data": data, "layout": layout}


def _distribution_figure(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, top: int) -> dict | None:
    features = [f for f in report.drifted_features if f in reference and f in current][:top]
    if not features:
        return None
    rng = np.random.default_rng(0)
    data, layout = [], {"barmode": "overlay", "height": 280 * len(features),
                        "title": {"text": "Reference vs current, most drifted"}, "annotations": []}
    gap = 0.3 / len(features)  # room for each subplot's title
    height = (1.0 - gap * (len(features) - 1)) / len(features)
    for i, name in enumerate(features, start=1):
        suffix = "" if i == 1 else str(i)
        top_edge = 1.0 - (i - 1) * (height + gap)
        layout[f"xaxis{suffix}"] = {"anchor": f"y{suffix}", "domain": [0.0, 1.0]}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "domain": [top_edge - height, top_edge]}
        layout["annotations"].append(_title(str(name), 0.5, top_edge))
        kind = report.rows.loc[report.rows["feature"] == name, "kind"].iloc[0]
        for label, df, color in (("reference", reference, "#1f77b4"), ("current", current, "#d62728")):
            s = df[name].dropna()
            if len(s) > PLOT_SAMPLE:
                s = s.iloc[rng.choice(len(s), PLOT_SAMPLE, replace=False)]
            trace = {"name": label, "marker": {"color": color}, "showlegend": i == 1, "legendgroup": label,
                     "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}
            if kind == "categorical":
                freq = s.astype(str).value_counts(normalize=True).sort_index()
                data.append({**trace, "type": "bar", "x": _values(freq.index), "y": _values(freq.to_numpy())})
            else:
                data.append({**trace, "type": "histogram", "x": _typed_array(pd.to_numeric(s, errors="coerce")),
                             "histnorm": "probability density", "opacity": 0.6})
    return {"data": data, "layout": layout}


def _history_figure(history: pd.DataFrame) -> dict:
    x = _values(history["block"].astype(str) if "block" in history else history.index)
    data = [{"type": "scatter", "x": x, "y": _values(history["drift_share"].astype(float)), "mode": "lines+markers",
             "name": "drift share"}]
    if "n_drifted" in history:
        data.append({"type": "bar", "x": x, "y": _values(history["n_drifted"]), "name": "drifted features",
                     "opacity": 0.4, "yaxis": "y2"})
    if "drift_detected" in history:
        hit = history["drift_detected"].astype(bool).to_numpy()
        data.append({"type": "scatter", "x": [v for v, h in zip(x, hit) if h],
                     "y": _values(history["drift_share"].astype(float)[hit]), "mode": "markers",
                     "name": "block drifted", "marker": {"symbol": "x", "size": 12, "color": "red"}})
    layout = {"height": 360, "title": {"text": "Drift across blocks"}, "xaxis": {"type": "category"},
              "yaxis2": {"overlaying": "y", "side": "right"}}
    return {"data": data, "layout": layout}


def _figure_div(figure: dict, div_id: str) -> str:
    """A ``div`` that plotly.js draws from ``figure``; ``</`` is escaped so no text in it ends the script."""
    spec = json.dumps(figure, allow_nan=False).replace("</", "<\\/")
    height = figure["layout"].get("height", 450)
    return (f"<div id='{div_id}' class='plotly-graph-div' style='height:{height}px; width:100%;'></div>"
            f"<script>(function () {{ const f = {spec}; "
            f"Plotly.newPlot('{div_id}', f.data, f.layout, {{responsive: true}}); }})();</script>")


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
    path = as_location(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "directory" and not (path.parent / PLOTLY_JS).is_file():
        write_readable_text_atomic(path.parent / PLOTLY_JS, get_plotlyjs())
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
    css = "bad" if bool(dataset["drifted"]) else "ok"
    parts = [
        f"<h1>{html.escape(title)}: <span class='{css}'>{verdict}</span></h1>",
        f"<p id='decision'>{html.escape(str(dataset['note']))}</p>",
        "<h2>Summary</h2>" + html_table(_summary(results), "summary"),
        _legend(results),
    ]
    for i, (fig, caption) in enumerate(figures):
        parts.append(_figure_div(fig, f"chart-{i}"))
        parts.append(f"<p class='caption'><i>{html.escape(caption)}</i></p>")
    parts.append("<h2>All tests</h2>" + html_table(results, "all-tests"))
    if report.multivariate_note:
        parts.append(f"<p>Multivariate: {html.escape(report.multivariate_note)}</p>")
    script = plotly_script(PLOTLY_JS if plotlyjs == "directory" else None)
    write_readable_text_atomic(path, page(title, "\n".join(parts), head=script))
    return path

