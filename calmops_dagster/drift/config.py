"""Configuration of the drift engine, embedded as the ``drift:`` section of a pipeline spec.

Every field has a default, and unknown keys are rejected, so a typo in ``pipeline.yaml`` is an error
rather than a silently ignored setting.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Multiple-testing corrections of :func:`calmops_dagster.drift.corrections.adjust_pvalues` (named here, not
#: imported from there, so reading a spec does not import numpy).
Correction = Literal["bonferroni", "holm", "fdr_bh", "none"]

ErrorDetector = Literal["ddm", "hddm_a", "page_hinkley", "eddm", "adwin", "hddm_w", "kswin"]
NumericTest = Literal["ks", "mannwhitney", "psi", "wasserstein", "cvm", "anderson"]
CategoricalTest = Literal["chi2", "psi", "js"]

#: Tests that yield a p-value and so can establish significance on their own. The others (numeric
#: ``wasserstein``, categorical ``psi`` and ``js``) are distances that only gate on size.
NUMERIC_HYPOTHESIS_TESTS = frozenset({"ks", "mannwhitney", "psi", "cvm", "anderson"})
CATEGORICAL_HYPOTHESIS_TESTS = frozenset({"chi2"})

_DEFAULT_MIN_EFFECT = {
    "ks": 0.1,
    "mannwhitney": 0.1,
    "cvm": 0.1,
    "anderson": 0.1,
    "wasserstein": 0.1,
    "chi2": 0.1,
    "js": 0.1,
    "missing": 0.05,
}


class DriftConfig(BaseModel):
    """What to test, and when a difference counts as drift.

    A (feature, test) row is *drifted* when its p-value, corrected across all rows of the block, is below
    ``alpha`` **and** its effect size reaches the test's minimum, so a tiny but significant shift on a
    million rows is no alarm. A distance without a p-value (``wasserstein``, categorical ``psi``, ``js``) is drifted when its
    effect size reaches its minimum and the same feature is significant on some hypothesis test. A feature
    is drifted when any of its rows is; the block is drifted when at least one feature is drifted and the
    share of drifted features reaches ``min_drift_share``, or when a multivariate test fires.

    Attributes
    ----------
    numeric_tests : list of str
        Tests for numeric features: ``ks`` (Kolmogorov-Smirnov; effect = D, the largest CDF gap),
        ``mannwhitney`` (effect = |rank-biserial correlation|), ``psi`` (population stability index; its
        p-value is Pearson's chi-squared on the same bins; effect = PSI), ``wasserstein`` (effect = distance / reference std),
        ``cvm`` (Cramer-von Mises) and ``anderson`` (Anderson-Darling k-sample), whose effect is KS D.
        ``cvm`` and ``anderson`` call scipy per column and are slow on large blocks.
    categorical_tests : list of str
        Tests for categorical features: ``chi2`` (chi-squared homogeneity, as frouros' ChiSquareTest;
        effect = Cramer's V; required, it is the categorical hypothesis test), and the distances ``psi``
        over categories and ``js`` (Jensen-Shannon distance, base 2).
    alpha : float
        Significance level of the block: the chance of a false alarm on a block without drift.
    correction : {"holm", "bonferroni", "fdr_bh", "none"}
        Multiple-testing correction across every p-valued row of the block. ``holm`` and ``bonferroni``
        control the family-wise error rate, ``fdr_bh`` the false discovery rate; ``none`` is for
        single-feature use only (50 features would then give ~92% false-alarm blocks).
    psi_bins : int
        Number of bins of numeric PSI.
    psi_binning : {"quantile", "uniform"}
        ``quantile``: bin edges at the reference's quantiles (every bin holds ~1/psi_bins of the
        reference; robust to outliers). ``uniform``: equal-width bins over the pooled range, as frouros.
    psi_threshold : float
        Minimum PSI for a drifted ``psi`` row (CalmOps: 0.10; 0.25 is the usual "major shift").
    min_effect : dict of str to float
        Minimum effect size per test name (``psi`` uses ``psi_threshold``). Missing names keep their
        default (0.1 for every test).
    categorical_columns : list of str
        Columns always treated as categorical, whatever their dtype.
    numeric_columns : list of str
        Columns always treated as numeric (they must be numeric on both sides).
    max_categorical_unique : int
        A numeric column with at most this many distinct values (both sides pooled) is treated as
        categorical. Object, string, category and bool columns are always categorical.
    max_categories : int
        Categorical columns keep their most frequent reference categories up to this number; the rest is
        pooled into one ``other`` category so chi-squared stays meaningful on ID-like columns.
    min_samples : int
        Fewer non-null values than this on either side gives a ``not tested`` row.
    min_drift_share : float
        Share of tested features that must drift for the block to count as drifted (0 = any one).
    multivariate : bool
        Run the multivariate tests (MMD permutation test and LightGBM domain classifier).
    multivariate_tests : list of str
        Which multivariate tests: ``mmd`` and/or ``classifier``.
    multivariate_alpha_share : float
        Share of ``alpha`` spent on the multivariate tests (Bonferroni split, so the block's false alarm
        rate stays at most ``alpha``): univariate rows get ``alpha * (1 - share)``, each multivariate test
        ``alpha * share / n_tests``.
    multivariate_sample_size : int
        At most this many rows per side are sampled for the multivariate tests, bounding their time.
    mmd_permutations : int
        Permutations of the MMD test; its smallest p-value is 1 / (permutations + 1).
    mmd_exceedances : int
        The MMD test is sequential (Besag & Clifford 1991): it stops drawing permutations once this many
        reach the observed statistic, with p-value ``exceedances / permutations drawn``, and draws all
        ``mmd_permutations`` only for a statistic that few permutations reach. Raised where needed to the
        MMD test's level (``alpha * multivariate_alpha_share / len(multivariate_tests)``) times
        ``mmd_permutations``, so the decision is always the fixed test's; a larger value gives a more
        precise p-value for more permutations.
    classifier_folds : int
        Cross-validation folds of the domain classifier.
    classifier_min_auc : float
        Minimum cross-validated AUC for the domain classifier to count as drift (effect-size gate).
    missing_values : bool
        Also test each feature's missing-value rate (``missing``: chi-squared on the 2x2 table of missing /
        present counts; effect = absolute difference of the rates, minimum 0.05), when either side has
        missing values. It catches a feature that goes (partly or wholly) empty, which the distribution
        tests cannot see because they compare the values that are present.
    decision_rule : {"drift_or_performance", "drift", "performance", "estimated_performance"}
        What calls for a challenger in a pipeline: statistical data drift OR a performance drop (CalmOps'
        rule, the default), data drift only, a performance drop only, or a drop of the performance
        *estimated without labels* (classifiers and regressors whose primary metric is estimated; data
        drift alone then calls for nothing). A champion
        below an absolute performance threshold calls for one under every rule. Not used by
        :func:`detect_drift` itself.
    error_detectors : list of str
        Streaming detectors run over the champion's per-row errors on a labelled block (where in the block
        it broke; informational, not part of the retrain decision): by default ``ddm``, ``hddm_a`` and
        ``page_hinkley`` (O(n), calibrated to alarm on at most 5% of stable blocks); ``eddm``, ``adwin``,
        ``hddm_w`` and ``kswin`` on request (frouros, row by row: slow, and not calibrated).
    seed : int
        Seed of every random choice (sampling, permutations, folds), so reports are reproducible.
    """

    model_config = ConfigDict(extra="forbid")

    numeric_tests: list[NumericTest] = Field(default_factory=lambda: ["ks", "psi", "wasserstein"])
    categorical_tests: list[CategoricalTest] = Field(default_factory=lambda: ["chi2", "psi", "js"])
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    correction: Correction = "holm"
    psi_bins: int = Field(10, ge=2, le=1000)
    psi_binning: Literal["quantile", "uniform"] = "quantile"
    psi_threshold: float = Field(0.10, ge=0.0)
    min_effect: dict[str, float] = Field(default_factory=dict)
    categorical_columns: list[str] = Field(default_factory=list)
    numeric_columns: list[str] = Field(default_factory=list)
    max_categorical_unique: int = Field(10, ge=0)
    max_categories: int = Field(50, ge=2)
    min_samples: int = Field(5, ge=2)
    min_drift_share: float = Field(0.0, ge=0.0, le=1.0)
    multivariate: bool = True
    multivariate_tests: list[Literal["mmd", "classifier"]] = Field(default_factory=lambda: ["mmd", "classifier"])
    multivariate_alpha_share: float = Field(0.2, gt=0.0, lt=1.0)
    multivariate_sample_size: int = Field(1000, ge=20)
    mmd_permutations: int = Field(500, ge=19)
    mmd_exceedances: int = Field(10, ge=1)
    classifier_folds: int = Field(3, ge=2, le=10)
    classifier_min_auc: float = Field(0.55, ge=0.5, le=1.0)
    missing_values: bool = True
    decision_rule: Literal["drift_or_performance", "drift", "performance", "estimated_performance"] = (
        "drift_or_performance")
    error_detectors: list[ErrorDetector] = Field(default_factory=lambda: ["ddm", "hddm_a", "page_hinkley"])
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "DriftConfig":
        """Reject settings that cannot decide anything."""
        unknown = set(self.min_effect) - set(_DEFAULT_MIN_EFFECT)
        if unknown:
            raise ValueError(
                f"min_effect: unknown tests {sorted(unknown)}; valid: {sorted(_DEFAULT_MIN_EFFECT)} "
                "(psi uses psi_threshold)"
            )
        for name, tests, valid in (("numeric_tests", self.numeric_tests, NUMERIC_HYPOTHESIS_TESTS),
                                   ("categorical_tests", self.categorical_tests, CATEGORICAL_HYPOTHESIS_TESTS)):
            if not set(tests) & valid:
                raise ValueError(f"{name} needs at least one test with a p-value: {sorted(valid)}")
        both = set(self.categorical_columns) & set(self.numeric_columns)
        if both:
            raise ValueError(f"columns both in categorical_columns and numeric_columns: {sorted(both)}")
        if self.multivariate and not self.multivariate_tests:
            raise ValueError("multivariate is on but multivariate_tests is empty")
        return self

    def effect_threshold(self, test: str) -> float:
        """Minimum effect size for a row of ``test`` to count as drifted."""
        if test == "psi":
            return self.psi_threshold
        return self.min_effect.get(test, _DEFAULT_MIN_EFFECT[test])

    @property
    def univariate_alpha(self) -> float:
        """The alpha the corrected univariate p-values are compared with."""
        if self.multivariate:
            return self.alpha * (1.0 - self.multivariate_alpha_share)
        return self.alpha
