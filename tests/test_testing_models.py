"""The fault-injection tree: only the fit that raises the signal stalls, so a run that trains again (a
redelivered step, a promotion's calibration folds) is not held up once per fit."""

from __future__ import annotations

import numpy as np

from calmops_dagster.learning import testing_models
from calmops_dagster.learning.testing_models import ControlledTree


def test_only_the_fit_that_creates_the_signal_stalls(tmp_path, monkeypatch):
    signal = tmp_path / "training"
    slept = []
    monkeypatch.setattr(testing_models.time, "sleep", slept.append)
    monkeypatch.setenv("CALMOPS_TEST_FIT_SIGNAL", str(signal))
    monkeypatch.setenv("CALMOPS_TEST_FIT_SLEEP", "4")
    X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])

    first = ControlledTree(random_state=0).fit(X, y)
    assert signal.exists() and slept == [4.0]
    again = ControlledTree(random_state=0).fit(X, y)  # the signal is there: training goes on at once
    assert slept == [4.0]
    assert first.predict(X).tolist() == again.predict(X).tolist() == [0, 0, 1, 1]

    monkeypatch.delenv("CALMOPS_TEST_FIT_SIGNAL")
    ControlledTree(random_state=0).fit(X, y)  # no signal asked for: a plain tree
    assert slept == [4.0]
