"""``skops.io``, imported without importing torch and without a walk over every module per ufunc.

When skops is imported it lists the scikit-learn estimators it trusts (``sklearn.utils.discovery.
all_estimators``), which walks every scikit-learn package. The walk imports scikit-learn's vendored
``sklearn.externals.array_api_compat.torch``, and that imports torch: half of skops' import, paid by
every process that saves or loads a model (each run worker of ``dagster dev``, ``calmops
run``, ``calmops serve``). That package holds no estimator (the walk lists nothing under ``externals``),
and the walk skips a package that fails to import, so while skops is imported that one package is made to
fail; it imports normally afterwards. When torch is already loaded, nothing is skipped.

skops then names the numpy and scipy ufuncs it trusts (about 840). A ufunc has no ``__module__``, so
skops' ``whichmodule`` (pickle's) looks for it in the loaded modules in turn, up to the first that holds it,
with ``getattr(module, name, None)``: for a module without the name that raises and swallows an
AttributeError. In a ``calmops run`` (2,300 modules) that was most of the import's time. skops' function is
replaced by :func:`first_module_holding`, which gives the same answer from a dictionary lookup in each plain
module (benchmarks/RESULTS.md has what that saved; the walk's length depends on the import order). The
tests compare its answers with pickle's, and the names skops then trusts with a plain import's.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import pickle
import sys
import threading
import types
import warnings

_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"
_SKOPS_UTILS = "skops.io._utils"
_lock = threading.Lock()


def first_module_holding(obj, name: str) -> str:
    """The module ``obj`` belongs to: its ``__module__``, else the first module in ``sys.modules`` whose
    attribute ``name`` is ``obj``, else ``"__main__"``: what :func:`pickle.whichmodule` answers.

    For a plain name a plain module (no module-level ``__getattr__``) is asked through its ``__dict__``,
    which is where ``getattr`` finds such a name; any other entry is asked with ``getattr``. Dotted and
    dunder names go to pickle's function itself."""
    module_name = getattr(obj, "__module__", None)
    if module_name is not None:
        return module_name
    if "." in name or name.startswith("__"):
        return pickle.whichmodule(obj, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core's getattr warns
        for module_name, module in sys.modules.copy().items():
            if module_name in ("__main__", "__mp_main__") or module is None:
                continue
            if type(module) is types.ModuleType and "__getattr__" not in module.__dict__:
                found = module.__dict__.get(name)
            else:
                try:
                    found = getattr(module, name, None)
                except (AttributeError, ImportError):
                    continue
            if found is obj:
                return module_name
    return "__main__"


class _SkipPackage(importlib.abc.MetaPathFinder):
    """Makes importing exactly ``name`` raise ImportError; for every other name it finds nothing (None), so
    the next finder on ``sys.meta_path`` imports it."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            raise ImportError(f"{fullname} is skipped while skops lists scikit-learn's estimators")


class _FastWhichmodule(importlib.abc.MetaPathFinder):
    """Imports ``skops.io._utils`` from its file as usual and, right after it runs (before the module that
    lists the trusted ufuncs uses it), sets its ``whichmodule`` to :func:`first_module_holding`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _SKOPS_UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            run_module = spec.loader.exec_module

            def run_then_replace(module):
                run_module(module)
                if hasattr(module, "whichmodule"):
                    module.whichmodule = first_module_holding

            spec.loader.exec_module = run_then_replace
        return spec


def skops_io():
    """The ``skops.io`` module (imported once per process, without torch unless torch is already loaded, and
    with :func:`first_module_holding` as its ``whichmodule``)."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    with _lock:
        finders = [_FastWhichmodule()]
        if "torch" not in sys.modules:
            finders.append(_SkipPackage(_TORCH_SHIM))
        sys.meta_path[:0] = finders
        try:
            return importlib.import_module("skops.io")
        finally:
            for finder in finders:
                sys.meta_path.remove(finder)
