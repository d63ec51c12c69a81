"""Streaming concept-drift detectors over a whole error stream at once: numpy, O(n), no Python loop per row.

frouros' detectors take one value per ``update`` call (tens of microseconds each, seconds for a 10,000-row
block and the default set). These functions compute, for a stream known in full (a block's per-row errors),
the same statistics for every prefix with cumulative sums and running minima, and return the first row at
which frouros' detector with the same settings would signal drift (and the first warning before it). Each
is tested to agree with frouros row for row (``tests/test_stream_detectors.py``).

- :func:`ddm`: DDM (Gama et al. 2004): error rate ``p`` and ``s = sqrt(p(1-p)/i)``; drift when
  ``p + s`` exceeds its running minimum's ``p_min + drift_level * s_min``.
- :func:`hddm_a`: HDDM-A, one-sided (Frías-Blanco et al. 2014): Hoeffding's bound between the mean since
  the cut point (where ``mean + bound`` was lowest) and the overall mean.
- :func:`page_hinkley`: Page-Hinkley as frouros computes it: a fading cumulative sum of
  ``x - running mean - delta`` above ``lambda_``.

Each returns ``(drift_index, warning_index)``, 0-based rows or ``None``.
"""

from __future__ import annotations

import numpy as np


def _running_means(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = np.arange(1, values.size + 1, dtype=float)
    return np.cumsum(values) / count, count


def _first(mask: np.ndarray, offset: int = 0, before: int | None = None) -> int | None:
    hits = np.flatnonzero(mask[: None if before is None else max(before - offset, 0)])
    return int(hits[0]) + offset if hits.size else None


def _argmin_so_far(values: np.ndarray, keep_first: bool) -> np.ndarray:
    """For every position, the index of the running minimum of ``values`` up to it: the earliest index
    holding it (``keep_first``: a new minimum must be strictly lower) or the latest (ties move it)."""
    running = np.minimum.accumulate(values)
    if keep_first:
        new = np.r_[True, values[1:] < running[:-1]]
    else:
        new = values == running
    return np.maximum.accumulate(np.where(new, np.arange(values.size), 0))


def ddm(errors, warning_level: float = 2.0, drift_level: float = 3.0,
        min_num_instances: int = 30) -> tuple[int | None, int | None]:
    """DDM over a 0/1 error stream; frouros ``DDM(DDMConfig(warning_level, drift_level, min_num_instances))``.

    >>> rng = np.random.default_rng(0)
    >>> stream = np.r_[rng.random(1000) < 0.1, rng.random(1000) < 0.4].astype(float)
    >>> ddm(stream, min_num_instances=300)
    (1041, 1013)
    """
    e = np.asarray(errors, dtype=float)
    start = min_num_instances - 1
    if e.size <= start:
        return None, None
    mean, count = _running_means(e)
    std = np.sqrt(mean * (1 - mean) / count)
    level = (mean + std)[start:]
    at = _argmin_so_far(level, keep_first=True)
    p_min, s_min = mean[start:][at], std[start:][at]
    drift = _first(level > p_min + drift_level * s_min, start)
    warning = _first(level > p_min + warning_level * s_min, start, before=drift)
    return drift, warning


def hddm_a(values, alpha_d: float = 0.001, alpha_w: float = 0.005,
           min_num_instances: int = 30) -> tuple[int | None, int | None]:
    """One-sided HDDM-A over values in [0, 1]; frouros ``HDDMA(HDDMAConfig(alpha_d, alpha_w,
    two_sided_test=False, min_num_instances))``: drift when the mean rose.

    >>> rng = np.random.default_rng(0)
    >>> stream = np.r_[rng.random(1000) < 0.1, rng.random(1000) < 0.4].astype(float)
    >>> hddm_a(stream)
    (1016, 1013)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None
    mean, count = _running_means(x)
    bound = np.sqrt(np.log(1 / alpha_d) / (2 * count))
    cut = _argmin_so_far(mean + bound, keep_first=False)  # the cut moves on ties too
    n_cut, n = cut + 1.0, count
    rise = mean - mean[cut]
    spread = (n - n_cut) / (2 * n_cut * n)
    checked = (count >= min_num_instances) & (cut != np.arange(x.size))
    drift = _first(checked & (rise >= np.sqrt(spread * np.log(1 / alpha_d))))
    warning = _first(checked & (rise >= np.sqrt(spread * np.log(1 / alpha_w))), before=drift)
    return drift, warning


def page_hinkley(values, delta: float = 0.005, lambda_: float = 50.0, alpha: float = 0.9999,
                 min_num_instances: int = 30) -> tuple[int | None, None]:
    """Page-Hinkley as in frouros ``PageHinkley(PageHinkleyConfig(delta, lambda_, alpha, min_num_instances))``:
    ``sum_i = alpha * sum_{i-1} + (x_i - mean_i - delta)``, drift when ``sum_i > lambda_``.

    >>> rng = np.random.default_rng(0)
    >>> page_hinkley(np.r_[rng.normal(0, 1, 1000), rng.normal(1, 1, 1000)], lambda_=30)
    (1080, None)
    """
    from scipy.signal import lfilter

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None
    mean, count = _running_means(x)
    total = lfilter([1.0], [1.0, -alpha], x - mean - delta)  # the fading sum, every prefix at once
    return _first((count >= min_num_instances) & (total > lambda_)), None
