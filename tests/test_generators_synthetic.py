"""River synthetic streams: factory, reproducibility, concept drift placement."""

import numpy as np
import pytest

from calmops_dagster.generators.errors import GeneratorConfigError, UnknownOptionError
from calmops_dagster.generators.synthetic import GENERATORS, ConceptDrift, generate_synthetic, make_stream


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_rows_other_seed_other_rows(name):
    a, _ = generate_synthetic(name, 200, seed=3)
    b, _ = generate_synthetic(name, 200, seed=3)
    c, _ = generate_synthetic(name, 200, seed=4)
    assert a.equals(b)
    assert not a.equals(c)
    assert len(a) == 200 and "target" in a.columns


def _sea_rule_agreement(frame, threshold):
    # river's SEA labels a row 1 when x0 + x1 > threshold
    return float(((frame.x0 + frame.x1 > threshold) == (frame.target == 1)).mean())


def test_abrupt_concept_drift_switches_the_rule_at_the_position():
    frame, truth = generate_synthetic(
        "sea", 3000, seed=0, settings={"variant": 0}, drifts=[ConceptDrift(1500, {"variant": 3}, width=1)]
    )
    before, after = frame.iloc[:1500], frame.iloc[1500:]
    # variant 0 uses threshold 8, variant 3 uses 9.5
    assert _sea_rule_agreement(before, 8.0) == 1.0
    assert _sea_rule_agreement(after, 9.5) == 1.0
    assert _sea_rule_agreement(after, 8.0) < 0.95
    assert truth == [
        {
            "type": "concept_drift",
            "generator": "sea",
            "kind": "abrupt",
            "position": 1500,
            "width": 1,
            "rows": [1500, 1501],
            "settings": {"variant": 3},
        }
    ]


def test_gradual_drift_mixes_concepts_inside_the_width_only():
    frame, truth = generate_synthetic(
        "sea", 6000, seed=1, drifts=[ConceptDrift(3000, {"variant": 3}, width=1000)]
    )
    new_rule = (frame.x0 + frame.x1 > 9.5) == (frame.target == 1)
    old_rule = (frame.x0 + frame.x1 > 8.0) == (frame.target == 1)
    assert old_rule.iloc[:2000].all() and new_rule.iloc[4000:].all()
    window = frame.iloc[2500:3500]
    share_new = float((new_rule.iloc[2500:3500] & ~old_rule.iloc[2500:3500]).sum())
    share_old = float((old_rule.iloc[2500:3500] & ~new_rule.iloc[2500:3500]).sum())
    assert share_new > 0 and share_old > 0, (len(window), share_new, share_old)
    assert truth[0]["kind"] == "gradual" and truth[0]["rows"] == [2500, 3501]


def test_two_drifts_chain_at_exact_positions():
    frame, truth = generate_synthetic(
        "stagger",
        3000,
        seed=2,
        settings={"classification_function": 0},
        drifts=[
            ConceptDrift(1000, {"classification_function": 1}),
            ConceptDrift(2000, {"classification_function": 2}),
        ],
    )
    # STAGGER function 0: size small and color red (size 0, color 0)
    rule0 = ((frame["size"] == 0) & (frame["color"] == 0)).astype(int) == frame.target
    assert rule0.iloc[:1000].all()
    assert not rule0.iloc[1000:2000].all()
    assert [t["position"] for t in truth] == [1000, 2000]


def test_randomrbf_concept_drift_by_new_centroids():
    frame, _ = generate_synthetic(
        "randomrbf",
        400,
        seed=0,
        settings={"n_features": 3},
        drifts=[ConceptDrift(200, {"n_features": 3, "seed_model": 99})],
    )
    assert list(frame.columns) == ["x0", "x1", "x2", "target"]
    assert not np.allclose(frame.iloc[:200, :3].mean(), frame.iloc[200:, :3].mean(), atol=0.01)


def test_unknown_generator_lists_the_valid_ones():
    with pytest.raises(
        UnknownOptionError, match="valid options: agrawal, hyperplane, randomrbf, sea, sine, stagger"
    ):
        make_stream("led", seed=0)
    with pytest.raises(ValueError):
        make_stream("nope", seed=0)


@pytest.mark.parametrize(
    "drifts", [[ConceptDrift(50), ConceptDrift(10)], [ConceptDrift(-1)], [ConceptDrift(5, width=0)]]
)
def test_bad_drifts_are_rejected(drifts):
    with pytest.raises(GeneratorConfigError):
        generate_synthetic("sea", 100, seed=0, drifts=drifts)


def test_bad_river_settings_are_a_config_error():
    with pytest.raises(GeneratorConfigError, match="bad settings"):
        make_stream("sea", seed=0, variant=9)
