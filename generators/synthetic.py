"""Synthetic classification streams from river, with concept drift between generator settings.

One factory (:func:`make_stream`) builds any of river's Agrawal, SEA, Hyperplane, Sine, STAGGER and
RandomRBF generators from a name and keyword settings. :func:`generate_synthetic` chains several settings
("concepts") with river's ``ConceptDriftStream``, so a stream can switch concept abruptly (width 1) or
gradually (a sigmoid of the given width centred on the drift position), and returns a DataFrame together
with the ground truth of where each drift was placed. Every random choice is derived from one seed, so
the same arguments always give the same rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from river.datasets import synth

from calmops_dagster.generators.errors import GeneratorConfigError, check_option


def _agrawal(seed: int, **kw: Any) -> synth.Agrawal:
    return synth.Agrawal(seed=seed, **kw)


def _sea(seed: int, **kw: Any) -> synth.SEA:
    return synth.SEA(seed=seed, **kw)


def _hyperplane(seed: int, **kw: Any) -> synth.Hyperplane:
    return synth.Hyperplane(seed=seed, **kw)


def _sine(seed: int, **kw: Any) -> synth.Sine:
    return synth.Sine(seed=seed, **kw)


def _stagger(seed: int, **kw: Any) -> synth.STAGGER:
    return synth.STAGGER(seed=seed, **kw)


def _random_rbf(seed: int, **kw: Any) -> synth.RandomRBF:
    # RandomRBF has two seeds: the centroids (the concept) and the sampling. A concept drift between two
    # RandomRBF settings is usually a change of ``seed_model``, so the caller may set it; by default both
    # come from the stream seed.
    kw.setdefault("seed_model", seed)
    return synth.RandomRBF(seed_sample=seed, **kw)


#: Name -> builder ``(seed, **settings) -> river synthetic dataset``.
GENERATORS: Mapping[str, Callable[..., Any]] = {
    "agrawal": _agrawal,
    "sea": _sea,
    "hyperplane": _hyperplane,
    "sine": _sine,
    "stagger": _stagger,
    "randomrbf": _random_rbf,
}


def make_stream(name: str, seed: int, **settings: Any) -> Any:
    """Build one river synthetic stream by name.

    Parameters
    ----------
    name : str
        One of :data:`GENERATORS` (case-insensitive).
    seed : int
        Seed of the stream, so the rows are reproducible.
    **settings
        Keyword arguments of the river class (e.g. ``variant=2`` for SEA, ``classification_function=3``
        for Agrawal, ``mag_change=0.1`` for Hyperplane).

    Raises
    ------
    UnknownOptionError
        If ``name`` is not a known generator.
    GeneratorConfigError
        If river rejects the settings.

    Examples
    --------
    >>> x, y = next(iter(make_stream("sea", seed=1, variant=2)))
    >>> sorted(x)
    [0, 1, 2]
    """
    key = check_option("generator", name.lower(), GENERATORS)
    try:
        return GENERATORS[key](seed, **settings)
    except (TypeError, ValueError) as exc:
        raise GeneratorConfigError(f"bad settings {settings!r} for generator {name!r}: {exc}") from exc


@dataclass(frozen=True)
class ConceptDrift:
    """A change to new generator settings starting around row ``position``.

    Parameters
    ----------
    position : int
        Row index (0-based, in the whole stream) where the new concept reaches 50% probability.
    settings : dict
        Settings of the new concept (same generator name as the first concept).
    width : int
        Length of the transition in rows; 1 means abrupt. River draws each row from the new concept with
        probability ``1 / (1 + exp(-4 (i - position) / width))``.
    """

    position: int
    settings: dict[str, Any] = field(default_factory=dict)
    width: int = 1


class _Continued:
    """A river dataset whose iteration resumes an iterator already partly consumed."""

    def __init__(self, dataset: Any, iterator: Any) -> None:
        self.n_features = dataset.n_features
        self.n_classes = dataset.n_classes
        self.n_outputs = dataset.n_outputs
        self.task = dataset.task
        self.n_samples = dataset.n_samples
        self._iterator = iterator

    def __iter__(self) -> Any:
        return self._iterator


def _drift_record(drift: ConceptDrift, name: str) -> dict[str, Any]:
    half = drift.width // 2
    return {
        "type": "concept_drift",
        "generator": name,
        "kind": "abrupt" if drift.width <= 1 else "gradual",
        "position": drift.position,
        "width": drift.width,
        "rows": [max(drift.position - half, 0), drift.position + half + 1],
        "settings": dict(drift.settings),
    }


def generate_synthetic(
    name: str,
    n_rows: int,
    seed: int,
    settings: Mapping[str, Any] | None = None,
    drifts: Sequence[ConceptDrift] = (),
    target: str = "target",
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Generate ``n_rows`` rows of a river stream, switching concepts at the given drifts.

    Drifts are chained with ``ConceptDriftStream``: the stream built so far drifts into the next concept,
    so each ``position`` is a row number of the whole output.

    Parameters
    ----------
    name : str
        Generator name, see :data:`GENERATORS`.
    n_rows : int
        Number of rows to draw.
    seed : int
        Master seed; each concept and each drift stream gets its own seed derived from it.
    settings : mapping, optional
        Settings of the first concept.
    drifts : sequence of ConceptDrift
        Concept changes, in increasing ``position``.
    target : str
        Name of the label column.

    Returns
    -------
    frame : pandas.DataFrame
        Feature columns (river's names; integer names become ``x0, x1, ...``) and ``target``.
    ground_truth : list of dict
        One record per drift: kind, position, width, affected row range and the new settings.

    Examples
    --------
    >>> df, truth = generate_synthetic("sea", 100, seed=0, drifts=[ConceptDrift(50, {"variant": 3})])
    >>> df.shape, truth[0]["kind"]
    ((100, 4), 'abrupt')
    """
    if n_rows <= 0:
        raise GeneratorConfigError(f"n_rows must be positive, got {n_rows}")
    positions = [d.position for d in drifts]
    if positions != sorted(positions) or any(p < 0 for p in positions):
        raise GeneratorConfigError(f"drift positions must be non-negative and increasing, got {positions}")
    if any(d.width < 1 for d in drifts):
        raise GeneratorConfigError("drift width must be >= 1 (1 is an abrupt drift)")

    concepts = [dict(settings or {})] + [dict(d.settings) for d in drifts]
    streams = [make_stream(name, seed + 7919 * i, **c) for i, c in enumerate(concepts)]
    current: Any = streams[0]
    rows_iter = iter(current)
    rows: list[tuple[dict, Any]] = []
    for k, drift in enumerate(drifts):
        # River's ConceptDriftStream overflows math.exp when the drift is more than ~175 widths ahead, so
        # rows far before the transition are drawn straight from the current stream, and the drift stream
        # then continues that same iterator. Positions stay exact in whole-stream row numbers.
        lead = max(0, min(drift.position, n_rows) - len(rows) - 100 * drift.width)
        rows.extend(itertools.islice(rows_iter, lead))
        current = synth.ConceptDriftStream(
            stream=_Continued(current, rows_iter),
            drift_stream=streams[k + 1],
            position=drift.position - len(rows) + 1,
            width=drift.width,
            seed=seed + 104729 * (k + 1),
        )
        rows_iter = iter(current)
    rows.extend(itertools.islice(rows_iter, n_rows - len(rows)))
    frame = pd.DataFrame([x for x, _ in rows])
    frame.columns = [f"x{c}" if isinstance(c, int) else str(c) for c in frame.columns]
    frame[target] = [int(y) for _, y in rows]
    return frame, [_drift_record(d, name.lower()) for d in drifts]
