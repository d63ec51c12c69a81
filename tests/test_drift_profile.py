"""ReferenceProfile: the reference prepared once gives detect_drift's report exactly, block after block."""

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest

from calmops_dagster.drift import DriftConfig, DriftInputError, ReferenceProfile, columns, detect_drift
from calmops_dagster.drift.profile import ProfileFileError, ProfileMismatchError


def _side(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    """Every kind of column detect_drift tells apart: NaNs, categoricals, low-cardinality numerics,
    constants, nullable dtypes, bools."""
    num = rng.normal(shift, 1.0, n)
    num[rng.random(n) < 0.05] = np.nan
    cat = rng.choice(np.array(["a", "b", "c", None], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1])
    nullable = pd.array(rng.integers(0, 1000, n), dtype="Int64")
    nullable[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame({
        "num": num,
        "wide": rng.exponential(1.0 + shift, n),
        "low": rng.integers(0, 4 + int(shift > 0), n).astype(float),  # a new value when shifted
        "const": np.full(n, 3.0),
        "cat": cat,
        "catdtype": pd.Categorical(rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2] if shift else [0.2, 0.3, 0.5])),
        "flag": rng.random(n) < 0.3 + 0.2 * shift,
        "nullable": nullable,
        "ids": rng.integers(0, 80, n),  # many categories when treated as categorical (pooled as __other__)
        "int_codes": rng.integers(0, 3, n),
    })


def data_set(seed: int, n_ref: int, n_cur: int, shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ref, cur = _side(rng, n_ref, 0.0), _side(rng, n_cur, shift)
    ref["only_ref"] = rng.normal(size=n_ref)
    cur["only_cur"] = rng.normal(size=n_cur)
    cur["num_vs_text"] = rng.choice(["p", "q"], n_cur)
    ref["num_vs_text"] = rng.normal(size=n_ref)
    cur["wide"] = cur["wide"].where(rng.random(n_cur) < 0.7)  # missing rate changes
    cur["empty_now"], ref["empty_now"] = np.nan, rng.normal(size=n_ref)
    return ref, cur


DATA_SETS = [(0, 400, 300, 0.0), (1, 3000, 2500, 0.3), (2, 12_000, 11_000, 0.1), (3, 150, 15, 0.5)]
CONFIGS = {
    "default": DriftConfig(),
    "univariate": DriftConfig(multivariate=False),
    "every_test": DriftConfig(numeric_tests=["ks", "mannwhitney", "psi", "wasserstein", "cvm", "anderson"],
                              psi_binning="uniform", max_categories=10, multivariate_tests=["mmd"]),
    "forced_kinds": DriftConfig(categorical_columns=["int_codes", "low", "nullable"], numeric_columns=["ids"],
                                max_categorical_unique=100, correction="fdr_bh", min_samples=20),
    "classifier_small_sample": DriftConfig(multivariate_tests=["classifier"], multivariate_sample_size=200,
                                           seed=5, missing_values=False),
}


def assert_same_report(a, b) -> None:
    """Every row, p-value, note and multivariate result equal (floats bit for bit)."""
    pd.testing.assert_frame_equal(a.rows, b.rows, check_exact=True)
    assert repr(dataclasses.replace(a, rows=None)) == repr(dataclasses.replace(b, rows=None))


@pytest.mark.parametrize("case", DATA_SETS, ids=lambda c: f"seed{c[0]}-{c[1]}x{c[2]}")
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_a_profile_gives_the_frames_report(case, config_name):
    config = CONFIGS[config_name]
    ref, cur = data_set(*case)
    profile = ReferenceProfile.build(ref, config)
    from_file = ReferenceProfile.from_npz(profile.to_npz())
    expected = detect_drift(ref, cur, config)
    assert_same_report(detect_drift(profile, cur, config), expected)
    assert_same_report(detect_drift(from_file, cur, config), expected)
    features = ["num", "cat", "low", "nullable", "const"]
    assert_same_report(detect_drift(profile, cur, config, features=features), detect_drift(ref, cur, config, features))
    if config.multivariate and case[0] != 3:  # the last data set has too few current rows for them
        assert expected.multivariate


def test_one_profile_serves_many_blocks_and_every_per_block_setting():
    """Settings applied per block (tests, thresholds, correction, numeric_columns...) may change freely."""
    ref, _ = data_set(4, 2000, 10, 0.0)
    profile = ReferenceProfile.build(ref, DriftConfig())
    for block, shift in enumerate((0.0, 0.2, 1.0)):
        _, cur = data_set(10 + block, 10, 1500, shift)
        for config in (DriftConfig(), DriftConfig(multivariate=False, alpha=0.01, correction="bonferroni"),
                       DriftConfig(numeric_columns=["num"], max_categorical_unique=2, psi_bins=20,
                                   min_effect={"ks": 0.2}, max_categories=4, multivariate_tests=["mmd"])):
            assert_same_report(detect_drift(profile, cur, config), detect_drift(ref, cur, config))


def test_the_reference_is_not_sorted_again(monkeypatch):
    """With a profile, each numeric column sorts the current side only (4,000 rows, the reference 5,000)."""
    ref, cur = data_set(5, 5000, 4000, 0.2)
    config = DriftConfig(multivariate=False)
    profile = ReferenceProfile.build(ref, config)
    sorted_sizes = []
    real = columns._sorted_values

    def counting(s):
        sorted_sizes.append(len(s))
        return real(s)

    monkeypatch.setattr(columns, "_sorted_values", counting)
    detect_drift(profile, cur, config)
    assert len(sorted_sizes) >= 5 and set(sorted_sizes) == {4000}
    sorted_sizes.clear()
    detect_drift(ref, cur, config)
    assert sorted_sizes.count(5000) >= 5


def test_a_profile_prepared_with_other_settings_is_refused():
    ref, cur = data_set(6, 500, 500, 0.0)
    profile = ReferenceProfile.build(ref, DriftConfig())
    with pytest.raises(ProfileMismatchError, match=r"seed=0 \(config: 3\): prepare it again") as err:
        detect_drift(profile, cur, DriftConfig(seed=3))
    assert isinstance(err.value, DriftInputError)
    with pytest.raises(ProfileMismatchError, match=r"categorical_columns=\[\] \(config: \['low'\]\)"):
        detect_drift(profile, cur, DriftConfig(categorical_columns=["low"]))
    with pytest.raises(ProfileMismatchError, match="multivariate_sample_size=1000 \\(config: 500\\)"):
        detect_drift(profile, cur, DriftConfig(multivariate_sample_size=500))


def test_a_reference_detect_drift_refuses_is_refused_when_preparing_it():
    with pytest.raises(DriftInputError, match="reference has no rows"):
        ReferenceProfile.build(pd.DataFrame({"x": []}), DriftConfig())
    with pytest.raises(DriftInputError, match=r"reference has duplicated columns: \['x'\]"):
        ReferenceProfile.build(pd.DataFrame([[1.0, 2.0]], columns=["x", "x"]), DriftConfig())
    profile = ReferenceProfile.build(pd.DataFrame({"x": [1.0, 2.0]}), DriftConfig())
    with pytest.raises(DriftInputError, match="current has no rows"):
        detect_drift(profile, pd.DataFrame({"x": []}))


def test_the_file_reads_back_from_parquet_data_and_refuses_what_it_cannot_hold():
    ref, cur = data_set(7, 3000, 3000, 0.3)
    ref = pd.read_parquet(io.BytesIO(ref.to_parquet(index=False)))  # as a model version's reference.parquet
    profile = ReferenceProfile.from_npz(ReferenceProfile.build(ref, DriftConfig(), source="abc").to_npz())
    assert profile.source == "abc"
    assert_same_report(detect_drift(profile, cur), detect_drift(ref, cur))
    mixed = pd.DataFrame({"k": np.array(["a", 1, "b"] * 20, dtype=object)})
    with pytest.raises(ProfileFileError, match="multivariate sample cannot be stored as Parquet"):
        ReferenceProfile.build(mixed).to_npz()
    nan_text = pd.DataFrame({"k": np.array(["a", np.nan, "b"] * 20, dtype=object)})  # Parquet reads NaN as None
    with pytest.raises(ProfileFileError, match="does not read back from Parquet as it was"):
        ReferenceProfile.build(nan_text).to_npz()
    dates = pd.DataFrame({"d": [pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-02")] * 20})
    with pytest.raises(ProfileFileError, match="category Timestamp\\('2026-01-01 00:00:00'\\) is a Timestamp"):
        ReferenceProfile.build(dates).to_npz()
    for junk in (b"", b"not a zip", profile.to_npz()[:-100]):
        with pytest.raises(ProfileFileError, match="not a readable drift profile"):
            ReferenceProfile.from_npz(junk)


def test_a_signed_file_is_read_only_with_its_key():
    ref, cur = data_set(8, 500, 500, 0.0)
    profile = ReferenceProfile.build(ref, DriftConfig())
    key = b"k" * 32
    signed = profile.to_npz(key)
    assert_same_report(detect_drift(ReferenceProfile.from_npz(signed, key), cur), detect_drift(ref, cur))
    tampered = ReferenceProfile.build(ref.assign(num=ref["num"] + 1.0), DriftConfig()).to_npz()
    for data, k in ((profile.to_npz(), key), (signed, b"x" * 32), (tampered, key)):
        with pytest.raises(ProfileFileError, match="drift profile not signed with the model signing key"):
            ReferenceProfile.from_npz(data, k)
