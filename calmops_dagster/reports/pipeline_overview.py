"""The story of one pipeline in a few values: what the ``<name>/monitoring`` asset shows in the Dagster UI.

:func:`pipeline_overview` reads DuckDB and the champion pointer and returns plain values: the champion and
since when, the last decisions with their reasons, drift per block, the features that drift most, the
latest block's figures (numbers, so Dagster plots them across materializations) and links to the reports.
Links point at ``calmops serve`` (``/reports/<name>/``), whose address is ``$CALMOPS_REPORTS_URL``
(default ``http://127.0.0.1:5001``, the serve default), so they open from the browser showing the UI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote

import pandas as pd

from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

REPORTS_URL_ENV = "CALMOPS_REPORTS_URL"
DEFAULT_REPORTS_URL = "http://127.0.0.1:5001"


def reports_url(name: str, block: str | None = None) -> str:
    """URL of the pipeline report (``block`` None) or of one block's drift report, as served by
    ``calmops serve`` at ``$CALMOPS_REPORTS_URL``."""
    base = (os.environ.get(REPORTS_URL_ENV) or DEFAULT_REPORTS_URL).rstrip("/")
    page = "" if block is None else quote(f"{block}.html")
    return f"{base}/reports/{quote(name)}/{page}"


@dataclass
class Overview:
    """Plain values of a pipeline's story (see the module docstring)."""

    champion: str
    champion_since: str
    blocks_processed: int
    promotions: int
    rollbacks: int
    last_block: str
    numbers: dict[str, float | bool] = field(default_factory=dict)
    decisions_md: str = ""
    drift_md: str = ""
    features_md: str = ""
    pipeline_report_url: str = ""
    block_report_url: str | None = None
    block_report_path: str | None = None


def _md_cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A markdown table of ``frame`` (floats with 3 significant digits, ``|`` escaped)."""
    if frame.empty:
        return "nothing recorded yet"
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


#: The overview's four queries (``pipeline``; the drifted features' also ``top_features``), made on one
#: connection by :meth:`~calmops_dagster.store.metrics_store.MetricsStore.queries`.
PROMOTIONS_SQL = ("SELECT block, decision, champion_after, reason, champion_score, challenger_score FROM promotions "
                  "WHERE pipeline = ? ORDER BY decided_at")
SUMMARY_SQL = ("SELECT block, drift_detected, drift_share, n_drifted, n_tested, drifted_features, retrain, "
               "performance_value FROM drift_summary WHERE pipeline = ? ORDER BY computed_at")
DRIFTED_SQL = ("SELECT feature, count(DISTINCT block) AS blocks, max(effect_size) AS max_effect FROM drift_results "
               "WHERE pipeline = ? AND drifted AND feature NOT LIKE '\\_\\_%' ESCAPE '\\' "
               "GROUP BY feature ORDER BY blocks DESC, max_effect DESC LIMIT ?")
PROCESSED_SQL = "SELECT count(*) AS n FROM blocks WHERE pipeline = ?"


def pipeline_overview(home: CalmOpsHome, name: str, metric: str, last_n: int = 10, top_features: int = 5,
                      metrics: MetricsStore | None = None) -> Overview:
    """The overview of pipeline ``name``: blocks in the order they were processed, the last ``last_n``."""
    metrics = metrics or MetricsStore(home.metrics_db)
    store = ModelStore(home.models_dir(name))
    champion = store.champion_version()
    history = store.champion_history()
    since = next((h for h in reversed(history) if h["version"] == champion), None)
    promotions, summary, drifted, processed = metrics.queries(
        [(PROMOTIONS_SQL, [name]), (SUMMARY_SQL, [name]), (DRIFTED_SQL, [name, top_features]),
         (PROCESSED_SQL, [name])], pipeline=name)
    processed = processed["n"].iloc[0]

    last = summary.iloc[-1] if len(summary) else None
    last_block = str(promotions["block"].iloc[-1]) if len(promotions) else (
        str(last["block"]) if last is not None else "none")
    numbers: dict[str, float | bool] = {}
    if last is not None:
        numbers |= {"drift_share": float(last["drift_share"]), "drifted_features_count": int(last["n_drifted"]),
                    "drift_detected": bool(last["drift_detected"])}
        if pd.notna(last["performance_value"]):
            numbers[f"champion_{metric}"] = float(last["performance_value"])
    if len(promotions):
        numbers["promoted"] = bool(promotions["decision"].iloc[-1] == "promoted")

    decisions = promotions.tail(last_n).iloc[::-1].rename(columns={"champion_after": "champion"})
    drift = summary.tail(last_n).iloc[::-1].assign(
        drifted_features=lambda f: f["drifted_features"].replace("", "none"),
        drift_detected=lambda f: f["drift_detected"].map({True: "yes", False: "no"}))[
        ["block", "drift_detected", "drift_share", "n_drifted", "n_tested", "drifted_features"]]
    block_report = home.reports_dir(name) / f"{last['block']}.html" if last is not None else None
    has_report = block_report is not None and block_report.is_file()
    return Overview(
        champion=champion or "none",
        champion_since=(f"block {since['block']} ({since['decision']}, {since['at']})" if since else "none"),
        blocks_processed=int(processed),
        promotions=int((promotions["decision"] == "promoted").sum()),
        rollbacks=int((promotions["decision"] == "rolled_back").sum()),
        last_block=last_block,
        numbers=numbers,
        decisions_md=markdown_table(decisions),
        drift_md=markdown_table(drift),
        features_md=markdown_table(drifted.rename(columns={"blocks": "blocks drifted",
                                                           "max_effect": "largest effect"})),
        pipeline_report_url=reports_url(name),
        block_report_url=reports_url(name, str(last["block"])) if has_report else None,
        block_report_path=str(block_report) if has_report else None,
    )
