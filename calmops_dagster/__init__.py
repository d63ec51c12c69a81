"""calmops-dagster: drift monitoring, retraining and gated promotion of models on Dagster.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment unless it is set already (the
user's value wins). OpenMP's default lets a thread that waits at a barrier spin on its core, so LightGBM (and
scikit-learn's OpenMP code) fight the other busy processes of a shared machine for the cores, many times
slower (docs/unattended.md). The setting is read when the OpenMP runtime loads, so it must come before the first
import of lightgbm or scikit-learn: every process of a pipeline (``calmops``, ``dagster dev`` started by
``calmops dev``, its code server and run workers) imports this package first, and child processes inherit it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
