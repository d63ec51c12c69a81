"""Error-stream detectors: the numpy versions agree with frouros row for row, and the default set is
calibrated: on stable blocks (i.i.d. errors) each detector alarms on at most 5% of them."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
from frouros.detectors.concept_drift import DDM, HDDMA, DDMConfig, HDDMAConfig, PageHinkley, PageHinkleyConfig

from calmops_dagster.drift.config import DriftConfig, ErrorDetector
from calmops_dagster.drift.model_drift import DEFAULT_DETECTORS, DETECTORS, stream_drift
from calmops_dagster.drift.stream_detectors import ddm, hddm_a, page_hinkley


def frouros_first_drift(detector, stream) -> tuple[int | None, int | None]:
    drift = warning = None
    for i, value in enumerate(stream):
        detector.update(value=float(value))
        if warning is None and detector.status.get("warning"):
            warning = i
        if detector.status.get("drift"):
            drift = i
            break
    return drift, warning


def streams():
    """0/1 error streams with and without a rise of the error rate half-way, at several rates."""
    for seed, (p, rise, n) in enumerate([(0.02, 0.0, 1500), (0.1, 0.2, 1500), (0.3, 0.0, 2000),
                                         (0.3, 0.15, 1000), (0.5, 0.0, 2000), (0.05, 0.1, 2000)]):
        rng = np.random.default_rng(seed)
        yield np.r_[rng.random(n) < p, rng.random(n) < p + rise].astype(float)


@pytest.mark.parametrize("stream", list(streams()), ids=lambda s: f"{s.size}rows-{s.mean():.2f}")
def test_numpy_detectors_agree_with_frouros(stream):
    assert ddm(stream) == frouros_first_drift(DDM(DDMConfig()), stream)
    assert ddm(stream, 4.0, 5.0, 300) == frouros_first_drift(
        DDM(DDMConfig(warning_level=4.0, drift_level=5.0, min_num_instances=300)), stream)
    assert hddm_a(stream) == frouros_first_drift(HDDMA(HDDMAConfig()), stream)
    assert hddm_a(stream, 1e-5, 1e-4) == frouros_first_drift(HDDMA(HDDMAConfig(alpha_d=1e-5, alpha_w=1e-4)), stream)
    assert page_hinkley(stream, lambda_=10) == frouros_first_drift(PageHinkley(PageHinkleyConfig(lambda_=10)), stream)


def test_page_hinkley_agrees_with_frouros_on_real_valued_errors():
    rng = np.random.default_rng(9)
    stream = np.abs(np.r_[rng.normal(0, 1, 1500), rng.normal(0, 2, 1500)])
    config = PageHinkleyConfig(delta=0.02, lambda_=40)
    assert page_hinkley(stream, delta=0.02, lambda_=40) == frouros_first_drift(PageHinkley(config), stream)


@pytest.mark.parametrize(("error_rate", "rows"), [(0.02, 3000), (0.1, 1500), (0.3, 3000), (0.5, 1500)])
def test_each_default_detector_alarms_on_at_most_5_percent_of_stable_blocks(error_rate, rows):
    rng = np.random.default_rng(int(error_rate * 1000) + rows)
    alarms = dict.fromkeys(DEFAULT_DETECTORS, 0)
    blocks = 200
    for _ in range(blocks):
        for result in stream_drift((rng.random(rows) < error_rate).astype(float)).results:
            alarms[result.detector] += result.detected
    assert {name: count / blocks for name, count in alarms.items() if count > 0.05 * blocks} == {}


def test_default_detectors_stay_quiet_on_stable_regression_errors():
    rng = np.random.default_rng(11)
    alarms = {name: 0 for name in DEFAULT_DETECTORS if name != "ddm"}
    for _ in range(200):
        for result in stream_drift(np.abs(rng.normal(size=2000))).results:
            if result.detector in alarms:
                alarms[result.detector] += result.detected
    assert max(alarms.values()) <= 10, alarms


def test_the_calibrated_detectors_find_a_rise_of_the_error_rate():
    rng = np.random.default_rng(12)
    found = dict.fromkeys(DEFAULT_DETECTORS, 0)
    for _ in range(50):
        errors = np.r_[rng.random(2000) < 0.1, rng.random(2000) < 0.25].astype(float)
        for result in stream_drift(errors).results:
            found[result.detector] += result.detected and result.drift_index >= 2000
    assert min(found.values()) >= 45, found


def test_spec_default_and_valid_names_match_the_detectors():
    assert tuple(DriftConfig().error_detectors) == DEFAULT_DETECTORS
    with pytest.raises(ValueError, match="valid"):
        stream_drift(np.zeros(10), ("cusum",))
    assert set(DETECTORS) > set(DEFAULT_DETECTORS)
    assert set(get_args(ErrorDetector)) == set(DETECTORS)
