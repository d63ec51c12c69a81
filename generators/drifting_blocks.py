"""A small drifting classification dataset in blocks: the demo pipeline's data and the tests' fixture.

Before ``drift_at`` every block comes from one distribution; from ``drift_at`` on, the numeric features
shift (data drift), the category mix changes, and the decision boundary moves (concept drift), so the
champion's accuracy falls and a challenger trained on the new block wins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_drifting_blocks(
    n_blocks: int = 6, rows_per_block: int = 400, drift_at: int = 4, seed: int = 0, block_col: str = "block"
) -> pd.DataFrame:
    """Rows of blocks ``1..n_blocks`` with an abrupt drift at block ``drift_at``.

    Columns: ``x1..x4`` (numeric), ``segment`` (categorical), ``y`` (0/1) and ``block_col``.

    >>> frame = make_drifting_blocks(n_blocks=2, rows_per_block=5, drift_at=2)
    >>> frame.shape, sorted(frame["block"].unique().tolist())
    ((10, 7), [1, 2])
    """
    rng = np.random.default_rng(seed)
    parts = []
    for block in range(1, n_blocks + 1):
        drifted = block >= drift_at
        n = rows_per_block
        x = rng.normal(loc=[0, 0, 0, 0], scale=1.0, size=(n, 4))
        if drifted:
            x[:, 0] += 1.5
            x[:, 1] *= 2.0
        segment = rng.choice(["a", "b", "c"], size=n, p=[0.2, 0.3, 0.5] if drifted else [0.5, 0.3, 0.2])
        weights = np.array([-1.5, 1.0, 0.5, 0.0]) if drifted else np.array([1.5, 1.0, -0.5, 0.0])
        logits = x @ weights + np.where(segment == "a", 0.5, 0.0) + rng.normal(scale=0.5, size=n)
        y = (logits > (-2.0 if drifted else 0.0)).astype(int)
        parts.append(pd.DataFrame({
            "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "x4": x[:, 3],
            "segment": segment, "y": y, block_col: block,
        }))
    return pd.concat(parts, ignore_index=True)
