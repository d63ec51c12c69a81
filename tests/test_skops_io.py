"""skops is imported without torch, and trusts the same scikit-learn estimators as a plain import."""

import subprocess
import sys

PROBE = """
import sys
from calmops_dagster.store.skops_io import skops_io
names = skops_io()._trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES
print(len(names), 'sklearn.ensemble._forest.RandomForestClassifier' in names, 'torch' in sys.modules)
import sklearn.externals.array_api_compat.torch  # imports normally once skops is loaded
print('torch' in sys.modules)
"""
PLAIN = "import skops.io; print(len(skops.io._trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES))"


def _run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()


def test_skops_loads_without_torch_and_trusts_the_same_estimators():
    count, has_forest, torch_loaded, torch_after = _run(PROBE)
    assert (has_forest, torch_loaded, torch_after) == ("True", "False", "True")
    assert int(count) == int(_run(PLAIN)[0]) > 100
