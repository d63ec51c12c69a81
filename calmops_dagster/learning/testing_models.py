"""A model for fault-injection tests and benchmarks: a decision tree whose ``fit`` can be made to fail or
to stall, from the environment, so a test can break training in a run it does not control in-process.

- ``CALMOPS_TEST_FIT_FAIL=1``: ``fit`` raises ``RuntimeError`` (a training failure for the circuit breaker).
- ``CALMOPS_TEST_FIT_SIGNAL=<path>``: the ``fit`` that creates ``<path>`` (so a test knows training has
  started) then sleeps ``CALMOPS_TEST_FIT_SLEEP`` seconds (default 30) before fitting (a window to SIGKILL the
  run). A ``fit`` that finds ``<path>`` already there does not sleep: a run or a redelivered step that trains
  again, and a promotion's calibration folds (five more fits), are not held up once more.

Without these variables it is a plain ``DecisionTreeClassifier``. Spec: ``{module:
calmops_dagster.learning.testing_models, class: ControlledTree}``. ``FailingTree`` always fails to fit: one
pipeline whose training breaks beside others that train, in one process environment.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sklearn.tree import DecisionTreeClassifier


def first_to_signal(path: Path) -> bool:
    """Create ``path``; whether this call created it (exclusive creation: one winner among processes)."""
    try:
        path.open("x").close()
    except FileExistsError:
        return False
    return True


class ControlledTree(DecisionTreeClassifier):
    def fit(self, X, y, sample_weight=None, check_input=True):
        if os.environ.get("CALMOPS_TEST_FIT_FAIL") == "1":
            raise RuntimeError("injected training failure (CALMOPS_TEST_FIT_FAIL=1)")
        signal = os.environ.get("CALMOPS_TEST_FIT_SIGNAL")
        if signal and first_to_signal(Path(signal)):
            time.sleep(float(os.environ.get("CALMOPS_TEST_FIT_SLEEP", "30")))
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


class FailingTree(DecisionTreeClassifier):
    def fit(self, X, y, sample_weight=None, check_input=True):
        raise RuntimeError("injected training failure (FailingTree)")
