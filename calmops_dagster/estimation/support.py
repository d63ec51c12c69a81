"""Where the reference gives the calibration map evidence: the range and density of its raw probabilities
(per class for a multiclass model).

Outside the reference's range the map is extrapolated (isotonic: held constant), and in a probability bin
with few reference rows it rests on a handful of labels: an estimate for a block whose probabilities lie
there is a guess, whatever its interval says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bins of equal width over [0, 1] for the density of the reference's probabilities.
N_BINS = 20
#: A bin with fewer reference rows than this is sparse.
MIN_BIN_ROWS = 30
#: Share of a block's rows outside the range or in sparse bins above which the estimate carries a warning.
MAX_UNSUPPORTED_SHARE = 0.02


def _bin_index(proba: np.ndarray) -> np.ndarray:
    return np.minimum((proba * N_BINS).astype(np.intp), N_BINS - 1)


@dataclass(frozen=True)
class ProbabilitySupport:
    """The reference's raw probabilities: their range and their count per bin of width ``1 / N_BINS``.

    Examples
    --------
    >>> import numpy as np
    >>> support = ProbabilitySupport.from_reference(np.linspace(0.2, 0.8, 1000))
    >>> support.unsupported_shares(np.array([0.1, 0.5, 0.5, 0.9]))
    (0.5, 0.0)
    >>> support.warnings(*support.unsupported_shares(np.array([0.5, 0.5])))
    []
    """

    low: float
    high: float
    bin_counts: np.ndarray

    @classmethod
    def from_reference(cls, proba: np.ndarray) -> ProbabilitySupport:
        return cls(float(proba.min()), float(proba.max()), np.bincount(_bin_index(proba), minlength=N_BINS))

    def unsupported_shares(self, proba: np.ndarray) -> tuple[float, float]:
        """Shares of ``proba`` outside the reference range, and inside it but in a sparse bin."""
        outside = (proba < self.low) | (proba > self.high)
        sparse = ~outside & (self.bin_counts[_bin_index(proba)] < MIN_BIN_ROWS)
        return float(outside.mean()), float(sparse.mean())

    def warnings(self, outside: float, sparse: float) -> list[str]:
        """A warning when the shares of :meth:`unsupported_shares` add up to more than ``MAX_UNSUPPORTED_SHARE``."""
        if outside + sparse <= MAX_UNSUPPORTED_SHARE:
            return []
        return [(f"{outside + sparse:.1%} of the block's probabilities lack reference evidence "
                 f"({outside:.1%} outside the reference range [{self.low:.4g}, {self.high:.4g}], {sparse:.1%} "
                 f"in {1 / N_BINS:g}-wide bins with fewer than {MIN_BIN_ROWS} reference rows): the calibration "
                 f"map is extrapolated there and the estimate may be off by more than its interval")]


def worst_class_support(supports: list[ProbabilitySupport], proba: np.ndarray, classes) -> tuple[float, list[str]]:
    """A multiclass block's unsupported share and warnings: those of the class whose probability column
    (against that class's reference column) lacks evidence most.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).dirichlet([2, 2, 2], size=3000)
    >>> supports = [ProbabilitySupport.from_reference(ref[:, k]) for k in range(3)]
    >>> share, warnings = worst_class_support(supports, np.array([[0.999, 0.0005, 0.0005]] * 10), ["a", "b", "c"])
    >>> share, warnings[0].startswith("class 'a': 100.0%")
    (1.0, True)
    """
    shares = [support.unsupported_shares(proba[:, k]) for k, support in enumerate(supports)]
    worst = int(np.argmax([sum(s) for s in shares]))
    return sum(shares[worst]), [f"class {classes[worst]!r}: {w}" for w in supports[worst].warnings(*shares[worst])]
