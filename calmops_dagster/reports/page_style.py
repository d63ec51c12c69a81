"""One look for every page: the landing page, the pipeline report and the block drift reports.

The stylesheet (:data:`STYLESHEET`: dark text on white, one column up to 1240 px so it reads at 1280 px,
numbers right-aligned in tabular figures), the one way a value is shown (:func:`fmt`: 3 significant digits,
"—" when missing), tables (:func:`html_table`) and the page shell (:func:`page`). The stylesheet is inlined
in every page, so a report written to a file stays self-contained.

plotly.js comes from the installed ``plotly`` package, never a CDN (:func:`plotly_script`): embedded in a
page written to a file, or loaded from ``calmops serve`` at :data:`PLOTLY_ROUTE`.
"""

from __future__ import annotations

import functools
import html
import math
import pkgutil
from datetime import date, datetime

import numpy as np
import pandas as pd

#: Where ``calmops serve`` serves the plotly.js of the installed plotly package.
PLOTLY_ROUTE = "/static/plotly.min.js"
MISSING = "—"

STYLESHEET = """
:root{--ink:#1f2933;--muted:#52606d;--line:#d3dce6;--head:#eef2f7;--bad:#b3261e;--ok:#1b6e3a;--warn:#8a5a00;
--link:#0b57b0}
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif;color:var(--ink);
background:#fff;margin:0 auto;padding:20px 28px 48px;max-width:1240px}
h1{font-size:24px;margin:8px 0 4px} h2{font-size:18px;margin:32px 0 8px;padding-bottom:4px;
border-bottom:1px solid var(--line)} h3{font-size:15px;margin:20px 0 6px}
a{color:var(--link)} code{font-size:13px;background:var(--head);padding:0 3px;border-radius:3px}
p{margin:6px 0} ul{margin:6px 0;padding-left:22px}
.muted,.caption{color:var(--muted)} .caption{font-size:13px;margin:2px 0 18px} .note{font-size:12px}
.bad{color:var(--bad);font-weight:600} .ok{color:var(--ok);font-weight:600} .warn{color:var(--warn);font-weight:600}
.facts{display:flex;flex-wrap:wrap;gap:6px 28px;margin:10px 0 4px} .facts div{white-space:nowrap}
.facts b{font-weight:600}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
.chart{min-height:200px;margin:8px 0}
nav.crumbs{font-size:13px;color:var(--muted)} nav.crumbs a{margin-right:6px}
"""


def get_plotlyjs() -> str:
    """The plotly.js bundle shipped with the installed plotly package (what ``plotly.offline.get_plotlyjs``
    returns), read without importing plotly's figure machinery."""
    return pkgutil.get_data("plotly", "package_data/plotly.min.js").decode("utf-8")


@functools.cache
def plotly_js_bytes() -> bytes:
    """:func:`get_plotlyjs` as bytes, read once per process (what ``calmops serve`` answers at
    :data:`PLOTLY_ROUTE`)."""
    return get_plotlyjs().encode("utf-8")


def plotly_script(src: str | None = None) -> str:
    """The ``<script>`` giving a page plotly.js: embedded (``src`` None: the page works offline, ~4.8 MB) or
    loaded from ``src`` (a sibling file, or :data:`PLOTLY_ROUTE` on ``calmops serve``)."""
    if src is None:
        return f"<script type='text/javascript'>{get_plotlyjs()}</script>"
    return f"<script src='{html.escape(src, quote=True)}'></script>"


def is_missing(value) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and value == ""


def fmt(value) -> str:
    """How every value of a page is shown: numbers to 3 significant digits (1,000 to 1,000,000 rounded to a
    whole number, not 1.23e+03), booleans as yes/no, times to the second, missing values as "—"."""
    if is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return str(round(value)) if 1000 <= abs(value) < 1e6 else f"{value:.3g}"
    if isinstance(value, (datetime, pd.Timestamp)):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC")
        return stamp.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if stamp.tzinfo is not None else "")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def html_table(frame: pd.DataFrame, table_id: str | None = None, max_rows: int | None = None,
               empty: str = "nothing recorded") -> str:
    """An HTML table of ``frame``: every cell through :func:`fmt` and escaped, numeric columns right-aligned."""
    if frame.empty:
        return f"<p class='muted'>{html.escape(empty)}</p>"
    rows = frame if max_rows is None else frame.head(max_rows)
    numeric = [_is_numeric(frame[c]) for c in frame.columns]
    head = "".join(f"<th{' class=num' if n else ''}>{html.escape(str(c))}</th>"
                   for c, n in zip(frame.columns, numeric, strict=True))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if n else ''}>{html.escape(fmt(v))}</td>"
                                    for v, n in zip(row, numeric, strict=True)) + "</tr>"
                   for row in rows.itertuples(index=False))
    more = (f"<p class='muted'>first {max_rows} of {len(frame)} rows</p>"
            if max_rows is not None and len(frame) > max_rows else "")
    attribute = f" id='{html.escape(table_id, quote=True)}'" if table_id else ""
    return (f"<div class='table-wrap'><table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f"</table></div>{more}")


def page(title: str, body: str, head: str = "") -> str:
    """A whole HTML page with the shared stylesheet; ``head`` adds to ``<head>`` (the plotly script)."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{STYLESHEET}</style>{head}</head>"
            f"<body>{body}</body></html>")
