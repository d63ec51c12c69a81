"""The user's own training functions named by the spec's ``custom_functions``: trusted, resolved, traced.

A function is named ``module.path:function``. It is trusted as a ``model_spec`` class is: its module must be
one of the spec's ``allow_modules`` (or lie below one), checked on the name before anything is imported; the
module is located with :func:`importlib.util.find_spec`, then imported; the name must be a plain Python
function defined in an allowed module (a re-exported ``subprocess.run`` is refused) whose signature takes the
role's positional arguments (:data:`ROLES`). Every refusal is a :class:`ValueError` saying why, which the spec
loader reports under the field (``custom_functions.retrain``).

Lineage: :func:`function_lineage` records the function's path and the sha256 of its module file in the
model's manifest; :func:`cannot_rerun` says why a recorded function could not be run again as it was (its
module changed, it no longer resolves), or ``None``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path
from types import FunctionType

from calmops_dagster.spec import import_named_module

#: The positional arguments each role's function is called with (``context``: a
#: :class:`~calmops_dagster.learning.training_context.TrainingContext`).
ROLES = {
    "train": ("X", "y", "context"),
    "retrain": ("champion", "X", "y", "context"),
    "fallback": ("error", "X", "y", "context"),
}
_FUNCTION_PATH = re.compile(r"(?P<module>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)"
                            r":(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_allowed(module: str, allow_modules) -> bool:
    """Whether ``module`` is one of ``allow_modules`` or lies below one (``my_project.training``)."""
    return any(module == root or module.startswith(root + ".") for root in allow_modules)


def check_allow_modules(allow_modules: list[str]) -> list[str]:
    """``allow_modules`` when each is a dotted module name; else a :class:`ValueError` naming the bad one."""
    for module in allow_modules:
        if not isinstance(module, str) or not _MODULE.fullmatch(module):
            raise ValueError(f"{module!r} is not a dotted module name")
    return allow_modules


def split_path(path: str, allow_modules) -> tuple[str, str]:
    """``(module, function)`` of ``path``, checked on the names only: the format and ``allow_modules``."""
    found = _FUNCTION_PATH.fullmatch(path)
    if found is None:
        raise ValueError(f"'{path}' is not 'module.path:function'")
    module = found["module"]
    if not is_allowed(module, allow_modules):
        raise ValueError(f"module '{module}' is not in custom_functions.allow_modules {list(allow_modules)}; "
                         "add it there to import it")
    return module, found["name"]


def resolve_function(role: str, path: str, allow_modules) -> FunctionType:
    """The function ``path`` for ``role`` (a key of :data:`ROLES`), after the checks of the module docstring."""
    module, name = split_path(path, allow_modules)
    loaded = import_named_module(module, " (is its folder on PYTHONPATH?)")
    function = getattr(loaded, name, None)
    if function is None:
        raise ValueError(f"module '{module}' has no '{name}'")
    if not isinstance(function, FunctionType):
        # pydantic reports ValueError as a field error; TypeError would escape as a crash
        raise ValueError(f"'{path}' is not a function (it is of type {type(function).__name__})")  # noqa: TRY004
    if not is_allowed(function.__module__, allow_modules):
        raise ValueError(f"'{path}' is {function.__module__}.{function.__qualname__}, defined outside "
                         f"allow_modules {list(allow_modules)}")
    arguments = ROLES[role]
    signature = inspect.signature(function)
    try:
        signature.bind(*arguments)
    except TypeError as exc:
        raise ValueError(f"'{path}{signature}' cannot be called as {role}({', '.join(arguments)}): {exc}") from None
    return function


def module_file(function: FunctionType) -> Path:
    """The file the function's module was loaded from."""
    return Path(inspect.getfile(function)).resolve()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def function_lineage(role: str, path: str, function: FunctionType) -> dict:
    """What the manifest records about the function that built a model: its role, path, module file and the
    sha256 of that file."""
    source = module_file(function)
    return {"role": role, "function": path, "module_file": str(source), "module_sha256": file_sha256(source)}


def cannot_rerun(lineage: dict, allow_modules) -> str | None:
    """Why the function recorded in ``lineage`` (:func:`function_lineage`) could not be run again as it was,
    or ``None`` when it can: it still resolves for its role and its module file has the recorded sha256."""
    path, role = lineage.get("function"), lineage.get("role")
    if role not in ROLES or not isinstance(path, str):
        return f"the manifest's trained_by {lineage!r} names no function"
    try:
        function = resolve_function(role, path, allow_modules)
    except ValueError as exc:
        return f"{path} no longer resolves: {exc}"
    source = module_file(function)
    now = file_sha256(source)
    if now != lineage.get("module_sha256"):
        return (f"the module file of {path} changed since it was recorded ({source}: sha256 "
                f"{str(lineage.get('module_sha256'))[:12]}... then, {now[:12]}... now)")
    return None
