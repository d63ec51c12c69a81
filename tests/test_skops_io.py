"""skops is imported without torch, trusts the same scikit-learn estimators as a plain import, and names
ufuncs as pickle does."""

import pickle
import subprocess
import sys

import numpy as np
import scipy.special

from calmops_dagster.store.skops_io import first_module_holding

UFUNC_NAMES = """
def ufunc_names(trusted):  # one word for the names skops trusts for numpy's and scipy's ufuncs
    import hashlib
    return hashlib.sha256(repr(trusted.NUMPY_UFUNC_TYPE_NAMES + trusted.SCIPY_UFUNC_TYPE_NAMES).encode()).hexdigest()
"""
PROBE = UFUNC_NAMES + """
import sys
from calmops_dagster.store.skops_io import skops_io
names = skops_io()._trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES
print(len(names), 'sklearn.ensemble._forest.RandomForestClassifier' in names, 'torch' in sys.modules,
      skops_io()._utils.whichmodule.__name__, ufunc_names(skops_io()._trusted_types))
import sklearn.externals.array_api_compat.torch  # imports normally once skops is loaded
print('torch' in sys.modules)
"""
PLAIN = UFUNC_NAMES + """
import skops.io
print(len(skops.io._trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES), ufunc_names(skops.io._trusted_types))
"""


def _run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()


def test_skops_loads_without_torch_and_trusts_the_same_estimators_and_ufuncs():
    count, has_forest, torch_loaded, whichmodule, ufuncs, torch_after = _run(PROBE)
    assert (has_forest, torch_loaded, whichmodule, torch_after) == ("True", "False", "first_module_holding", "True")
    plain_count, plain_ufuncs = _run(PLAIN)
    assert (int(count), ufuncs) == (int(plain_count), plain_ufuncs) and int(count) > 100


def test_skops_names_ufuncs_as_pickle_does():
    """numpy's ufuncs and every tenth of scipy.special's (pickle's walk costs about 10 ms a ufunc in a pytest
    worker); the whole trusted list is compared with a plain import's above."""
    def ufuncs(module):
        return [obj for attr in sorted(dir(module)) if isinstance(obj := getattr(module, attr), np.ufunc)]

    sample = ufuncs(np) + ufuncs(scipy.special)[::10]
    assert len(sample) > 100
    for ufunc in sample:
        assert first_module_holding(ufunc, ufunc.__name__) == pickle.whichmodule(ufunc, ufunc.__name__)
    assert first_module_holding(np.ndarray, "ndarray") == "numpy"
    assert first_module_holding(object(), "no_module_has_this") == "__main__"
