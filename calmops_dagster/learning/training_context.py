"""What a user's training function is told about the model it builds: :class:`TrainingContext`.

The spec's ``custom_functions`` (:mod:`calmops_dagster.learning.custom_functions`) are called as
``train(X, y, context)``, ``retrain(champion, X, y, context)`` and ``fallback(error, X, y, context)``; the
context is the same small, frozen record for all three.

Examples
--------
>>> import logging
>>> import numpy as np
>>> context = TrainingContext("demo", "3", "window", ("1", "2", "3"), 0, logging.getLogger("demo"))
>>> context.source_blocks[-1], float(np.random.default_rng(context.random_state).random()) < 1
('3', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainingContext:
    """The pipeline, block and rows a custom function trains for."""

    pipeline: str
    """The pipeline's name."""
    block: str
    """The block the model is trained for (the block whose run calls the function)."""
    retrain_mode: str
    """The spec's ``retrain_mode``, which chose the rows: ``full`` (the block's training rows), ``window``
    (the last blocks) or ``replay_mix`` (the block plus a sample of earlier blocks)."""
    source_blocks: tuple[str, ...]
    """The blocks the rows ``X, y`` came from, oldest first; the block itself last."""
    random_state: int
    """An integer seed (the spec's ``seed``): pass it to scikit-learn's ``random_state``, or make a generator
    with ``numpy.random.default_rng(context.random_state)``. The same spec and block give the same seed."""
    logger: Any
    """Where to say what the function did (``logger.info(...)``; also ``debug``, ``warning``): the run's log
    in Dagster, a :class:`logging.Logger` elsewhere."""
