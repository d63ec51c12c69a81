"""Documented public path of the IPIP classifier; it lives in :mod:`calmops_dagster.learning.ipip`.

Kept so ``from calmops_dagster.ipip import IPIPClassifier`` and skops files written before the layers
(which name ``calmops_dagster.ipip.IPIPClassifier``) keep working.
"""

from calmops_dagster.learning.ipip import IPIPClassifier, draw_balanced_subset, grow_ensemble, ipip_sizes

__all__ = ["IPIPClassifier", "draw_balanced_subset", "grow_ensemble", "ipip_sizes"]
