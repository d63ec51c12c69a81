"""MMD permutation statistics in float32 with a certified error bound, and in float64 where it cannot decide.

A permutation's unbiased MMD^2 reads ``a'Ka`` (``a`` its 0/1 vector of the pooled rows it puts in X, ``K`` the
pooled kernel), so a batch of permutations costs one matrix product, the permutation test's main cost. Here
it is a float32 product with K's lower triangle (``a'Ka = 2 a'La - sum_S K_ii``, half the work of a full
product, each flop half the cost of a float64 one: a quarter of the time). Each float32 statistic comes with a
rigorous bound on how far it can lie from any float64 evaluation of it: a permutation farther than that from
the threshold is decided in float32, the few within it are recomputed in float64 as before, so every
exceedance count is the float64 test's.
"""

from typing import NamedTuple

import numpy as np
from scipy.linalg.blas import strmm

#: Unit roundoffs of IEEE single and double precision.
U32, U64 = 2.0**-24, 2.0**-53
#: Smallest normal float32: below it rounding (or a flush to zero) errs by at most this much, not relatively.
TINY32 = 2.0**-126


def gamma(k: int, u: float) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``, the relative error bound of ``k`` roundings (``k u < 1``)."""
    return k * u / (1 - k * u)


class PooledKernel(NamedTuple):
    """The pooled sample's kernel (symmetric, X rows first, entries in [0, 1]) and the sums every permutation
    reads."""

    kernel: np.ndarray
    total: float
    diag: float
    n_x: int


def pooled_kernel(kernel: np.ndarray, n_x: int) -> PooledKernel:
    """``kernel`` with its total and mean diagonal, computed once per test."""
    return PooledKernel(kernel, kernel.sum(), np.trace(kernel) / kernel.shape[0], n_x)


class Float32Kernel(NamedTuple):
    """What the float32 statistics read: the kernel rounded to float32, its float64 row sums and diagonal."""

    kernel32: np.ndarray
    row_sums: np.ndarray
    diagonal: np.ndarray


def float32_kernel(pk: PooledKernel) -> Float32Kernel:
    """The float32 copy, row sums and diagonal of ``pk.kernel``."""
    return Float32Kernel(pk.kernel.astype(np.float32), pk.kernel.sum(axis=1), np.diagonal(pk.kernel))


def membership(members: np.ndarray, n: int, dtype: type) -> np.ndarray:
    """The 0/1 membership matrix of permutations given as rows of X's pooled row indices."""
    member = np.zeros((members.shape[0], n), dtype=dtype)
    member[np.arange(members.shape[0])[:, None], members] = 1.0
    return member


def unbiased_mmd2(s_xx: np.ndarray, col: np.ndarray, pk: PooledKernel) -> np.ndarray:
    """Unbiased MMD^2 of permutations from ``s_xx = a'Ka`` and ``col = 1'Ka``: ``mmd_unbiased`` on permuted blocks."""
    n_x = pk.n_x
    n_y = pk.kernel.shape[0] - n_x
    s_xy = col - s_xx
    s_yy = pk.total - 2 * col + s_xx
    return ((s_xx - n_x * pk.diag) / (n_x * (n_x - 1)) + (s_yy - n_y * pk.diag) / (n_y * (n_y - 1))
            - 2 * s_xy / (n_x * n_y))


def float64_statistics(pk: PooledKernel, member: np.ndarray) -> np.ndarray:
    """The permutations' MMD^2 in float64, one product ``A K`` for the float64 membership matrix ``A``."""
    ka = member @ pk.kernel
    return unbiased_mmd2(np.einsum("bi,bi->b", member, ka), ka.sum(axis=1), pk)


def float32_forms(k32: Float32Kernel, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a'Ka`` and ``a'La`` of each permutation (a row of ``members``: the pooled rows it puts in X), ``a'La``
    from the float32 product with the kernel's lower triangle ``L`` summed in float64, and the batch's 0/1
    membership matrix in float32.

    ``strmm`` overwrites the Fortran-ordered ``A'`` (a copy of the C-ordered ``A``) with ``L A'``; the symmetric
    kernel's C-ordered copy read in Fortran order is the kernel itself.
    """
    member32 = membership(members, k32.kernel32.shape[0], np.float32)
    product = strmm(1.0, k32.kernel32.T, member32.copy().T, side=0, lower=1, overwrite_b=1).T
    product *= member32
    lower = product.sum(axis=1, dtype=np.float64)
    return 2 * lower - k32.diagonal[members].sum(axis=1), lower, member32


def form_error_bound(lower32: np.ndarray, n_x: int) -> np.ndarray:
    """Certified bound on ``|s32 - a'Ka|`` for :func:`float32_forms`' ``s32 = 2 lower32 - sum_S K_ii``, IEEE float32.

    ``|s32 - a'Ka| <= 2 (g/(1-g) lower32 + n_x^2 2^-126)``, ``g = gamma_{n_x+2} = (n_x+2) u/(1-(n_x+2) u)``, ``u = 2^-24``:
    L >= 0 rounded to float32 once, strmm dots of <= n_x exact 0/1 products in any order, a float64 sum over S.

    ``a'|L|a = a'La`` as L >= 0, which ``lower32 / (1 - g)`` bounds from above; the last term covers entries
    below float32's normal range, which rounding (or a BLAS flushing subnormals to zero) changes by at most
    2^-126. The diagonal is subtracted in float64 (its rounding is in :func:`statistic_margin`'s ``B64``).
    """
    g = gamma(n_x + 2, U32)
    return 2 * (g / (1 - g) * lower32 + n_x**2 * TINY32)


def statistic_margin(lower32: np.ndarray, n_x: int, n_y: int) -> np.ndarray:
    """Largest distance between a statistic computed from :func:`float32_forms` and any float64 evaluation of it.

    The statistic is ``c1 a'Ka - c2 1'Ka`` plus constants both paths share, so ``c1`` times
    :func:`form_error_bound`, plus ``B64``: with entries of K in [0, 1] (``a'Ka <= n_x^2``, ``1'Ka <= n n_x``,
    ``1'K1 <= n^2``), the float64 error of sums of at most ``2n`` terms and the formula's few operations,
    counted once for each path and once for the comparison.
    """
    n = n_x + n_y
    c1 = 1 / (n_x * (n_x - 1)) + 1 / (n_y * (n_y - 1)) + 2 / (n_x * n_y)
    c2 = 2 / (n_y * (n_y - 1)) + 2 / (n_x * n_y)
    formula = ((n_x**2 + n_x) / (n_x * (n_x - 1)) + (n**2 + 2 * n * n_x + n_x**2 + n_y) / (n_y * (n_y - 1))
               + 2 * (n * n_x + n_x**2) / (n_x * n_y))
    b64 = 3 * gamma(2 * n + 8, U64) * (c1 * n_x**2 + c2 * n * n_x + formula)
    return c1 * form_error_bound(lower32, n_x) + b64


def reaching(pk: PooledKernel, k32: Float32Kernel, members: np.ndarray,
             threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Whether each permutation's MMD^2 is at least ``threshold``, as the float64 product decides it.

    ``members`` holds one permutation per row: the pooled rows it puts in X. Returns that boolean per
    permutation and which ones were recomputed in float64 (their float32 statistic lay within
    :func:`statistic_margin` of the threshold). The recomputation is the float64 test's own arithmetic, on at
    least two rows (numpy hands a one-row product to gemv, which sums in another order than gemm). A
    recomputed statistic outside the margin of its float32 one means the BLAS broke IEEE float32 rounding:
    ``ArithmeticError``.
    """
    batch, n = members.shape[0], pk.kernel.shape[0]
    s32, lower32, member32 = float32_forms(k32, members)
    stat32 = unbiased_mmd2(s32, k32.row_sums[members].sum(axis=1), pk)
    margin = statistic_margin(lower32, pk.n_x, n - pk.n_x)
    reached = stat32 >= threshold
    unsure = np.abs(stat32 - threshold) <= margin
    redo = np.flatnonzero(unsure)
    if redo.size == 1 and batch > 1:
        redo = np.r_[redo, (redo[0] + 1) % batch]
    if redo.size:
        stat64 = float64_statistics(pk, member32[redo].astype(np.float64))
        if np.any(np.abs(stat64 - stat32[redo]) > margin[redo]):
            raise ArithmeticError("MMD permutations: the float32 matrix product erred beyond its IEEE rounding "
                                  "bound (is the BLAS in a reduced-precision mode?)")
        reached[redo] = stat64 >= threshold
    return reached, unsure
