"""Documented public path of the river adapters; they live in :mod:`calmops_dagster.learning.river_models`.

Kept so imports and pickled river champions written before the layers (which name
``calmops_dagster.river_models.RiverClassifier``) keep loading.
"""

from calmops_dagster.learning.river_models import RiverClassifier, RiverRegressor, wrap_river

__all__ = ["RiverClassifier", "RiverRegressor", "wrap_river"]
