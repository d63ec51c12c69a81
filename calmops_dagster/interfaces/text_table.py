"""Query results as a plain text table (``calmops sql``): text left-aligned, numbers right-aligned.

pandas' ``to_string`` right-aligns every column, which makes columns of names and reasons hard to read.
"""

from __future__ import annotations

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

#: Longer text cells are cut to this many characters, ending in ``...``.
MAX_TEXT_WIDTH = 80


def _text(value, max_width: int) -> str:
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")  # one row per line
    return text if len(text) <= max_width else text[:max_width - 3] + "..."


def format_table(frame: pd.DataFrame, max_width: int = MAX_TEXT_WIDTH) -> str:
    """``frame`` as aligned text, one row per line: numeric columns right-aligned and formatted as pandas
    prints them, every other column (text, booleans, times) left-aligned; columns two spaces apart.

    >>> frame = pd.DataFrame({"block": ["1", "10"], "decision": ["promoted", "kept"], "rows": [300, 5]})
    >>> print(format_table(frame))
    block  decision  rows
    1      promoted   300
    10     kept         5
    """
    columns = []
    for name in frame.columns:
        series = frame[name]
        numeric = is_numeric_dtype(series) and not is_bool_dtype(series)
        if numeric and len(series):
            cells = [c.strip() for c in series.to_frame().to_string(index=False, header=False).splitlines()]
        else:
            cells = [_text(v, max_width) for v in series]
        header = _text(name, max_width)
        width = max(len(header), *(len(c) for c in cells)) if cells else len(header)
        align = str.rjust if numeric else str.ljust
        columns.append([align(header, width), *(align(c, width) for c in cells)])
    return "\n".join("  ".join(row).rstrip() for row in zip(*columns, strict=True))
