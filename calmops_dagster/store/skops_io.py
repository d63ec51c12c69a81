"""``skops.io``, imported without importing torch.

When skops is imported it lists the scikit-learn estimators it trusts (``sklearn.utils.discovery.
all_estimators``), which walks every scikit-learn package. The walk imports scikit-learn's vendored
``sklearn.externals.array_api_compat.torch``, and that imports torch: about 3 s of CPU, half of skops'
import, paid by every process that saves or loads a model (each run worker of ``dagster dev``, ``calmops
run``, ``calmops serve``). That package holds no estimator (the walk lists nothing under ``externals``),
and the walk skips a package that fails to import, so while skops is imported that one package is made to
fail; it imports normally afterwards. When torch is already loaded, nothing is skipped.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading

_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"
_lock = threading.Lock()


class _SkipPackage(importlib.abc.MetaPathFinder):
    """Makes importing exactly ``name`` raise ImportError; for every other name it finds nothing (None), so
    the next finder on ``sys.meta_path`` imports it."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            raise ImportError(f"{fullname} is skipped while skops lists scikit-learn's estimators")


def skops_io():
    """The ``skops.io`` module (imported once per process, without torch unless torch is already loaded)."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    with _lock:
        if "torch" in sys.modules:
            return importlib.import_module("skops.io")
        skip = _SkipPackage(_TORCH_SHIM)
        sys.meta_path.insert(0, skip)
        try:
            return importlib.import_module("skops.io")
        finally:
            sys.meta_path.remove(skip)
