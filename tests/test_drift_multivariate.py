"""Multivariate drift: MMD against frouros, correlation-only shift, domain classifier, HTML report."""

import math
from functools import partial

import numpy as np
import pandas as pd
import pytest
from frouros.detectors.data_drift.batch import MMD
from frouros.utils.kernels import rbf_kernel
from scipy import stats
from sklearn.metrics import roc_auc_score

from calmops_dagster.drift import DriftConfig, detect_drift, mmd_permutations
from calmops_dagster.drift.mmd_permutations import (
    float32_forms,
    float32_kernel,
    float64_statistics,
    form_error_bound,
    membership,
    pooled_kernel,
    reaching,
    unbiased_mmd2,
)
from calmops_dagster.drift.multivariate import (
    CLASSIFIER_BINS,
    domain_classifier,
    fold_mann_whitney,
    mmd_permutation_test,
    mmd_sequential_test,
    mmd_unbiased,
    out_of_fold_scores,
    rbf_kernel_matrix,
)
from calmops_dagster.drift.report import MULTIVARIATE
from calmops_dagster.reports.block_report import write_drift_report_html


def test_mmd_statistic_matches_frouros():
    rng = np.random.default_rng(31)
    x = rng.multivariate_normal([1, 1], [[2, 0], [0, 2]], size=100)
    y = rng.multivariate_normal([0, 0], [[2, 1], [1, 2]], size=80)
    detector = MMD(kernel=partial(rbf_kernel, sigma=0.5))
    detector.fit(X=x)
    expected = detector.compare(X=y)[0].distance
    assert mmd_unbiased(rbf_kernel_matrix(np.vstack([x, y]), 0.5), 100) == pytest.approx(expected, rel=1e-10)


def test_mmd_permutation_pvalues_are_uniform_under_the_null_and_small_under_shift():
    rng = np.random.default_rng(1)
    null = [mmd_permutation_test(rng.normal(size=(60, 3)), rng.normal(size=(60, 3)), 99, rng)[1] for _ in range(60)]
    assert 0.35 < np.mean(null) < 0.65 and np.mean(np.array(null) < 0.05) <= 0.12
    _, p, _ = mmd_permutation_test(rng.normal(size=(200, 3)), rng.normal(0.5, size=(200, 3)), 199, rng)
    assert p == pytest.approx(1 / 200)


def _correlated(rng, n, rho, d=4):
    cov = np.eye(d)
    cov[0, 1] = cov[1, 0] = rho
    return pd.DataFrame(rng.multivariate_normal(np.zeros(d), cov, size=n)).add_prefix("f")


def test_correlation_only_shift_is_caught_by_both_multivariate_tests_not_by_marginals():
    rng = np.random.default_rng(5)
    ref, cur = _correlated(rng, 3000, 0.0), _correlated(rng, 3000, 0.9)
    report = detect_drift(ref, cur, DriftConfig(multivariate_sample_size=800, mmd_permutations=300))
    assert report.drifted_features == []           # every marginal is N(0, 1) on both sides
    assert report.drift_detected                   # ... and yet the block drifted
    by_test = {r.test: r for r in report.multivariate}
    assert by_test["mmd"].drifted and by_test["classifier"].drifted
    assert {name for name, _ in by_test["classifier"].top_features[:2]} == {"f0", "f1"}
    frame = report.to_frame()
    assert set(frame.loc[frame["feature"] == MULTIVARIATE, "test"]) == {"mmd", "classifier"}
    summary = report.summary()
    assert summary["mmd_drifted"] and summary["classifier_top_features"][0] in {"f0", "f1"}


def test_multivariate_tests_stay_quiet_without_drift_and_state_their_sampling():
    rng = np.random.default_rng(6)
    ref, cur = _correlated(rng, 5000, 0.5), _correlated(rng, 5000, 0.5)
    ref["cat"] = rng.choice(list("abc"), 5000)
    cur["cat"] = rng.choice(list("abc"), 5000)
    report = detect_drift(ref, cur, DriftConfig(multivariate_sample_size=500, mmd_permutations=200))
    assert not report.drift_detected
    for result in report.multivariate:
        assert not result.drifted and result.n_ref == 500
        assert "sampled 500 of 5000 reference" in result.note
    assert "cat" in report.multivariate[1].features


def test_html_report_is_self_contained_and_written_atomically(tmp_path):
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(list("ab"), 2000)})
    cur = pd.DataFrame({"x": rng.normal(1.0, size=2000), "c": rng.choice(list("ab"), 2000, p=[0.8, 0.2])})
    report = detect_drift(ref, cur, DriftConfig(multivariate_sample_size=200, mmd_permutations=100))
    history = pd.DataFrame({"block": ["b1", "b2"], "drift_share": [0.0, 0.5], "n_drifted": [0, 1],
                            "drift_detected": [False, True]})
    out = write_drift_report_html(report, ref, cur, tmp_path / "reports" / "b3.html", history=history)
    text = out.read_text(encoding="utf-8")
    assert out.stat().st_size > 3_000_000                      # plotly.js embedded, no CDN needed
    assert "<script src=" not in text and text.count("<script") >= 3
    for needle in ("Drift across blocks", "Reference vs current", "corrected p-value", "DRIFT"):
        assert needle in text
    assert [p.name for p in out.parent.iterdir()] == ["b3.html"]  # no temporary file left behind


def test_sequential_mmd_pvalues_are_valid_and_stop_early_under_the_null():
    rng = np.random.default_rng(36)
    runs = [mmd_sequential_test(rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), 199, rng, exceedances=10)
            for _ in range(200)]
    p = np.array([r.p_value for r in runs])
    # Valid: P(p <= a) <= a; with 200 datasets, a binomial tolerance of 3 standard deviations.
    for a in (0.05, 0.1, 0.5):
        assert np.count_nonzero(p <= a) <= 200 * a + 3 * np.sqrt(200 * a * (1 - a))
    drawn = np.array([r.permutations for r in runs])
    assert drawn.mean() < 199 / 4 and np.median(drawn) <= 30       # most stop after a few dozen
    stopped = drawn < 199
    assert np.allclose(p[stopped], 10 / drawn[stopped])            # Besag & Clifford's h / L


def test_sequential_mmd_reaches_the_fixed_tests_decision_and_pvalue_when_extreme():
    alpha, perms = 0.05, 199
    exceedances = int(np.ceil(alpha * perms))
    drawn = []
    for shift in (0.0, 0.2, 0.4, 0.6, 1.0):
        for seed in range(6):
            data = np.random.default_rng(seed)
            x, y = data.normal(size=(60, 4)), data.normal(size=(60, 4)) + [shift, 0, 0, 0]
            fixed = mmd_permutation_test(x, y, perms, np.random.default_rng(seed))
            seq = mmd_sequential_test(x, y, perms, np.random.default_rng(seed), exceedances=exceedances)
            assert seq.mmd2 == fixed[0] and seq.sigma == fixed[2]
            assert (seq.p_value < alpha) == (fixed[1] < alpha), (shift, seed)
            drawn.append(seq.permutations)
            if seq.permutations == perms:                          # not stopped: the fixed test's p-value
                assert seq.p_value == fixed[1]
            else:
                assert seq.p_value >= alpha
    assert min(drawn) < perms / 4 and drawn.count(perms) >= 6      # both stops and full runs were seen


def test_detect_drift_mmd_note_states_the_permutations_drawn():
    rng = np.random.default_rng(8)
    ref, cur = _correlated(rng, 2000, 0.3), _correlated(rng, 2000, 0.3)
    mmd = next(r for r in detect_drift(ref, cur, DriftConfig(multivariate_sample_size=300)).multivariate
               if r.test == "mmd")
    assert not mmd.drifted and "of 500 permutations (sequential: stops once 10 reach" in mmd.note
    drawn = int(mmd.note.split(" of 500 permutations")[0].rsplit("; ", 1)[1])
    assert drawn < 500 and mmd.p_value == pytest.approx(10 / drawn)


#: Out-of-fold AUCs of the domain classifier with LightGBM's default 255 bins (the code before
#: ``CLASSIFIER_BINS``), seeds 0-2: 1,000 reference rows of 20 N(0, 1) features against 1,000 with 5 shifted
#: by 0.3, and against 1,000 without drift.
_AUC_255_BINS = {(0, "shift"): 0.6365, (1, "shift"): 0.6223, (2, "shift"): 0.6028,
                 (0, "null"): 0.4793, (1, "null"): 0.4948, (2, "null"): 0.5171}


def _auc_standard_error(auc: float, n1: int, n0: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return float(np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_domain_classifier_on_few_bins_keeps_its_auc_within_a_standard_error(seed):
    assert CLASSIFIER_BINS < 255
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(1000, 20))).add_prefix("f")
    shifted = pd.DataFrame(rng.normal(size=(1000, 20)) + np.r_[np.full(5, 0.3), np.zeros(15)]).add_prefix("f")
    null = pd.DataFrame(rng.normal(size=(1000, 20))).add_prefix("f")
    alpha = DriftConfig().alpha * DriftConfig().multivariate_alpha_share / 2
    for name, cur in (("shift", shifted), ("null", null)):
        auc, p, _ = domain_classifier(x, cur, 3, seed)
        before = _AUC_255_BINS[seed, name]
        assert abs(auc - before) < _auc_standard_error(before, 1000, 1000), name
        assert (p < alpha and auc >= 0.55) == (name == "shift")        # the decision the 255-bin fit took


def _float64_sequential_test(x, y, permutations, rng, exceedances=None, sigma=None):
    """The test as it was before the float32 products (every permutation's product in float64): the reference
    the certified float32 path must match exactly."""
    from threadpoolctl import threadpool_limits

    from calmops_dagster.drift.multivariate import FIRST_BATCH, median_sigma

    pooled = np.vstack([x, y])
    n, n_x = pooled.shape[0], x.shape[0]
    n_y = n - n_x
    sigma = sigma or median_sigma(pooled, rng)
    kernel = rbf_kernel_matrix(pooled, sigma)
    observed = mmd_unbiased(kernel, n_x)
    total, diag = kernel.sum(), np.trace(kernel) / n
    stop_at = exceedances if exceedances is not None else permutations + 1
    count = drawn = 0
    batch = FIRST_BATCH
    with threadpool_limits(limits=1, user_api="blas"):
        while drawn < permutations:
            batch = min(batch, permutations - drawn)
            member = np.zeros((batch, n))
            for b in range(batch):
                member[b, rng.permutation(n)[:n_x]] = 1.0
            ka = member @ kernel
            s_xx = np.einsum("bi,bi->b", member, ka)
            col = ka.sum(axis=1)
            s_xy, s_yy = col - s_xx, total - 2 * col + s_xx
            perm = ((s_xx - n_x * diag) / (n_x * (n_x - 1)) + (s_yy - n_y * diag) / (n_y * (n_y - 1))
                    - 2 * s_xy / (n_x * n_y))
            hits = count + np.cumsum(perm >= observed - 1e-12)
            if hits[-1] >= stop_at:
                stopped = drawn + int(np.argmax(hits >= stop_at)) + 1
                return observed, stop_at / stopped, float(sigma), stopped
            count, drawn, batch = int(hits[-1]), drawn + batch, 2 * batch
    return observed, (1 + count) / (1 + permutations), float(sigma), permutations


def _grid():
    """Seeded (x, y, sigma) data sets: 20 N(0, 1) features with the first 5 shifted (none, near the decision
    boundary, far past it), and 1-d 0/1 features whose many permutations tie with the observed statistic (an
    RBF bandwidth whose kernel values float32 rounds down and one it rounds up)."""
    for shift in (0.0, 0.05, 0.1, 0.15, 0.3):
        for seed in range(3):
            data = np.random.default_rng(seed)
            x, y = data.normal(size=(300, 20)), data.normal(size=(300, 20)) + np.r_[np.full(5, shift), np.zeros(15)]
            yield f"shift {shift}, seed {seed}", x, y, None
    for sigma in (0.5, 0.7, 2.0):
        for seed in range(3):
            data = np.random.default_rng(seed)
            yield f"ties, sigma {sigma}, seed {seed}", data.integers(0, 2, (40, 1)) * 1.0, data.integers(0, 2, (40, 1)) * 1.0, sigma


@pytest.mark.parametrize("exceedances", [None, 10])
def test_float32_products_give_the_float64_tests_statistic_pvalue_and_permutations(exceedances):
    drifted = rechecked = 0
    for name, x, y, sigma in _grid():
        want = _float64_sequential_test(x, y, 500, np.random.default_rng(7), exceedances, sigma)
        got = mmd_sequential_test(x, y, 500, np.random.default_rng(7), exceedances, sigma)
        assert (got.mmd2, got.p_value, got.sigma, got.permutations) == want, name
        drifted += got.p_value < 0.005
        rechecked += got.in_float64
    assert drifted >= 5 and rechecked > 0           # rejections, and permutations the bound left to float64


def test_the_grid_catches_a_bound_thirty_times_too_small(monkeypatch):
    """The tied data sets put permutations within float32 rounding of the threshold: with a margin 1/30 of the
    certified one (or none) they are miscounted or their recomputation is found outside it, so the equality
    test above fails on a wrong bound (the planted kernel below is sharper: its error is 0.3 of the bound)."""
    certified = mmd_permutations.statistic_margin
    monkeypatch.setattr(mmd_permutations, "statistic_margin", lambda *args: certified(*args) / 30)
    caught = []
    for name, x, y, sigma in _grid():
        try:
            got = mmd_sequential_test(x, y, 500, np.random.default_rng(7), None, sigma)
        except ArithmeticError:                      # a recomputed statistic outside the (wrong) bound
            caught.append(name)
            continue
        if tuple(got[:4]) != _float64_sequential_test(x, y, 500, np.random.default_rng(7), None, sigma):
            caught.append(name)                      # or a miscount
    assert caught and all(name.startswith("ties") for name in caught)


def _planted_kernel(n_x: int = 200) -> np.ndarray:
    """Symmetric, entries in [0, 1]: the first pooled row and column all ones, every other entry just under
    float32's half-ulp of 1, so a float32 dot that meets the 1 first (as BLAS does, in row order) drops each
    of them."""
    kernel = np.full((2 * n_x, 2 * n_x), 0.99 * 2.0**-24)
    kernel[0] = kernel[:, 0] = 1.0
    return kernel


def test_form_error_bound_holds_and_a_quarter_of_it_would_not_on_a_planted_kernel():
    kernel, n_x = _planted_kernel(), 200
    k32 = float32_kernel(pooled_kernel(kernel, n_x))
    rng = np.random.default_rng(3)
    members = np.vstack([np.arange(n_x), *(np.r_[0, 1 + rng.permutation(2 * n_x - 1)[:n_x - 1]] for _ in range(20)),
                         *(rng.permutation(2 * n_x)[:n_x] for _ in range(20))])
    s32, lower32, _ = float32_forms(k32, members)
    exact = np.array([math.fsum(kernel[np.ix_(m, m)].ravel()) for m in members])
    error, bound = np.abs(s32 - exact), form_error_bound(lower32, n_x)
    assert np.all(error <= bound)
    assert error[0] > 0.25 * bound[0]               # planted: 0.3 of the bound on OpenBLAS's blocked strmm
    # the same bound on an RBF kernel, where rounding errs both ways
    x = rng.normal(size=(2 * n_x, 5))
    kernel = rbf_kernel_matrix(x, 2.0)
    s32, lower32, _ = float32_forms(float32_kernel(pooled_kernel(kernel, n_x)), members)
    exact = np.array([math.fsum(kernel[np.ix_(m, m)].ravel()) for m in members])
    assert np.all(np.abs(s32 - exact) <= form_error_bound(lower32, n_x))


def test_a_float32_product_off_by_more_than_its_bound_is_caught():
    rng = np.random.default_rng(4)
    pk = pooled_kernel(rbf_kernel_matrix(rng.normal(size=(400, 5)), 2.0), 200)
    members = np.vstack([rng.permutation(400)[:200] for _ in range(30)])
    float64 = float64_statistics(pk, membership(members, 400, np.float64))
    k32 = float32_kernel(pk)

    def threshold_at_permutation_5(planted):            # where its float32 statistic lands: unsure
        s32, _, _ = float32_forms(planted, members)
        return float(unbiased_mmd2(s32, planted.row_sums[members].sum(axis=1), pk)[5])

    # each entry 4 roundings off, within the bound: permutation 5 rechecked, every decision the float64 one
    within = k32._replace(kernel32=(k32.kernel32 * np.float32(1 + 2.0**-22)).astype(np.float32))
    threshold = threshold_at_permutation_5(within)
    reached, unsure = reaching(pk, within, members, threshold)
    assert unsure[5] and np.array_equal(reached, float64 >= threshold)
    # 1e-4 off, far beyond float32 rounding (as a BLAS in a reduced-precision mode might be): caught
    beyond = k32._replace(kernel32=(k32.kernel32 * np.float32(1 + 1e-4)).astype(np.float32))
    with pytest.raises(ArithmeticError, match="beyond its IEEE rounding bound"):
        reaching(pk, beyond, members, threshold_at_permutation_5(beyond))


def test_a_drifted_block_is_decided_in_float32_alone():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 20)), rng.normal(size=(1000, 20)) + np.r_[np.full(5, 0.3), np.zeros(15)]
    result = mmd_sequential_test(x, y, 500, np.random.default_rng(1), exceedances=10)
    assert result.permutations == 500 and result.p_value == 1 / 501
    assert result.in_float64 == 0                    # no permutation lay within the bound of the threshold

def _tied_scores(rng, n):
    """Scores rounded to 2 decimals (so with ties), the current rows' shifted a little."""
    is_current = rng.random(n) < 0.45
    return np.round(rng.random(n) * 0.6 + 0.08 * is_current, 2), is_current


def test_fold_mann_whitney_on_one_fold_is_scipys_one_sided_mann_whitney_with_ties():
    scores, is_current = _tied_scores(np.random.default_rng(40), 300)
    test = fold_mann_whitney(scores, is_current, np.zeros(300, dtype=int))
    reference = stats.mannwhitneyu(scores[is_current], scores[~is_current], alternative="greater",
                                   method="asymptotic", use_continuity=False)
    assert len(np.unique(scores)) < 100                                # ties, so the tie correction counts
    assert test.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert test.auc == pytest.approx(roc_auc_score(is_current, scores), rel=1e-12)


def test_fold_mann_whitney_averages_the_folds_z_scores_and_aucs():
    rng = np.random.default_rng(41)
    scores, is_current = _tied_scores(rng, 400)
    fold = rng.choice(3, 400, p=[0.3, 0.3, 0.4])
    z = [stats.norm.isf(stats.mannwhitneyu(scores[(fold == k) & is_current], scores[(fold == k) & ~is_current],
                                           alternative="greater", method="asymptotic", use_continuity=False).pvalue)
         for k in range(3)]
    test = fold_mann_whitney(scores, is_current, fold)
    assert test.z == pytest.approx(np.mean(z), rel=1e-9)
    assert test.p_value == pytest.approx(stats.norm.sf(np.mean(z)), rel=1e-9)
    assert test.auc == pytest.approx(np.mean([roc_auc_score(is_current[fold == k], scores[fold == k]) for k in range(3)]))
    # A fold whose scores are all tied (a model with no split) is no evidence either way: z = 0, AUC = 0.5.
    flat = np.where(fold == 2, 0.5, scores)
    assert fold_mann_whitney(flat, is_current, fold).z == pytest.approx((z[0] + z[1]) / 3, rel=1e-9)


def test_domain_classifier_reports_the_folds_mean_auc_and_their_fold_test():
    rng = np.random.default_rng(42)
    x = pd.DataFrame(rng.normal(size=(300, 4))).add_prefix("f")
    y = pd.DataFrame(rng.normal(size=(300, 4)) + [0.8, 0, 0, 0]).add_prefix("f")
    auc, p, _ = domain_classifier(x, y, 3, 42)
    oof = out_of_fold_scores(x, y, 3, 42)
    assert sorted(np.bincount(oof.fold)) == [200, 200, 200] and oof.is_current.sum() == 300
    fold_aucs = [roc_auc_score(oof.is_current[oof.fold == k], oof.scores[oof.fold == k]) for k in range(3)]
    assert auc == pytest.approx(np.mean(fold_aucs)) and auc > 0.6
    assert p == fold_mann_whitney(oof.scores, oof.is_current, oof.fold).p_value < 0.005


def test_domain_classifier_pvalues_are_valid_under_the_null():
    """On 250 seeded no-drift data sets, P(p <= a) stays within a 3-sigma binomial bound of a, and the p-values'
    z-scores (centred under no drift) are no wider than a standard normal's. Two folds are the hard case: each
    trains the other's model, so their z-scores correlate most (about 0.7). The pooled Mann-Whitney p-value
    of the code before fails both (P(p <= 0.05) = 0.10, mean z^2 = 1.61 here)."""
    n_sets = 250
    p = []
    for seed in range(n_sets):
        rng = np.random.default_rng(seed)
        x, y = (pd.DataFrame(rng.normal(size=(300, 5))).add_prefix("f") for _ in range(2))
        p.append(domain_classifier(x, y, 2, seed)[1])
    p = np.array(p)
    for a in (0.05, 0.1, 0.2):
        assert np.mean(p <= a) <= a + 3 * np.sqrt(a * (1 - a) / n_sets), a
    assert np.mean(stats.norm.isf(p) ** 2) <= 1 + 3 * np.sqrt(2 / n_sets)
