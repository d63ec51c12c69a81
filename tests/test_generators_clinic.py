"""ClinicGenerator: count marginals, copula modules, visits; drift as group transitions and module shifts."""

import numpy as np
import pytest
from scipy import stats

from calmops_dagster.generators.clinic import ClinicGenerator, GroupTransition, ModuleShift
from calmops_dagster.generators.errors import GeneratorConfigError, UnknownOptionError


@pytest.fixture(scope="module")
def cohort():
    gen = ClinicGenerator(n_genes=20, n_proteins=5, n_modules=5, seed=3)
    frame, truth = gen.generate(
        400, 6, transitions=[GroupTransition(2, 0.5)], module_shifts=[ModuleShift(4, 3, 3.0)]
    )
    return gen, frame, truth


def test_rnaseq_counts_are_non_negative_integers(cohort):
    gen, frame, _ = cohort
    genes = frame[gen.feature_names[: gen.n_genes]]
    assert all(dtype == np.int64 for dtype in genes.dtypes)
    assert (genes >= 0).all().all()
    # over-dispersed, as negative-binomial counts are: variance above the mean for every gene
    control = genes[(frame.visit == 0) & (frame.diagnosis == 0)]
    assert (control.var() > control.mean()).all()
    assert (frame[gen.feature_names[gen.n_genes :]] > 0).all().all()


def test_modules_are_correlated_inside_and_not_across(cohort):
    gen, frame, _ = cohort
    first = frame[(frame.visit == 0) & (frame.diagnosis == 0)]
    inside = stats.spearmanr(first[gen.module_columns(2)]).statistic
    within = inside[np.triu_indices_from(inside, 1)]
    across = stats.spearmanr(first["gene_002"], first["gene_003"]).statistic
    print(f"\nspearman inside module 2: {within.round(2).tolist()}, across modules: {across:.2f}")
    assert within.min() > 0.35 and abs(across) < 0.15
    # the protein of module 2 follows its genes
    assert "prot_002" in gen.module_columns(2)


def test_patients_are_longitudinal(cohort):
    _, frame, _ = cohort
    v0, v1 = frame[frame.visit == 0].reset_index(), frame[frame.visit == 1].reset_index()
    assert (
        (v0.patient_id == v1.patient_id).all() and (v1.age == v0.age + 1).all() and (v1.sex == v0.sex).all()
    )
    assert stats.spearmanr(v0.gene_005, v1.gene_005).statistic > 0.4


def test_group_transition_changes_diagnosis_and_disease_modules_only(cohort):
    gen, frame, truth = cohort
    prevalence = frame.groupby("visit").diagnosis.mean()
    assert prevalence[0] == prevalence[1] < prevalence[2] == prevalence[3]
    rec = truth[0]
    assert rec["type"] == "group_transition" and rec["blocks"] == [2, 3, 4, 5]
    assert prevalence[2] - prevalence[1] == pytest.approx(rec["n_patients"] / 400)
    # disease modules (0 up, 1 down) move between visit 1 and 2; the other modules do not
    p = {
        m: [
            stats.ks_2samp(frame.loc[frame.visit == 1, c], frame.loc[frame.visit == 2, c]).pvalue
            for c in gen.module_columns(m)
        ]
        for m in range(gen.n_modules)
    }
    print("\nKS p visit 1 vs 2 by module: " + str({m: np.round(v, 4).tolist() for m, v in p.items()}))
    for m in (0, 1):
        assert np.median(p[m]) < 1e-3 and max(p[m]) < 0.05, m
    for m in (2, 3, 4):
        assert min(p[m]) > 0.01, m


def test_module_shift_is_a_correlated_shift_of_one_module(cohort):
    gen, frame, truth = cohort
    rec = truth[1]
    assert rec["columns"] == gen.module_columns(3) and rec["blocks"] == [4, 5]
    before, after = frame[frame.visit == 3], frame[frame.visit == 4]
    for col in gen.module_columns(3):
        assert stats.ks_2samp(before[col], after[col]).pvalue < 1e-4, col
        assert after[col].median() > 2 * before[col].median()
    for col in gen.module_columns(2):
        assert stats.ks_2samp(before[col], after[col]).pvalue > 0.01, col


def test_reproducible_and_new_time_steps_continue_the_cohort(cohort):
    gen, frame, _ = cohort
    again, _ = gen.generate(
        400, 6, transitions=[GroupTransition(2, 0.5)], module_shifts=[ModuleShift(4, 3, 3.0)]
    )
    assert again.equals(frame)
    later, _ = gen.generate(
        400, 8, transitions=[GroupTransition(2, 0.5)], module_shifts=[ModuleShift(4, 3, 3.0)], first_visit=6
    )
    assert sorted(later.visit.unique()) == [6, 7]
    assert (
        later[later.visit == 6].patient_id.to_numpy() == frame[frame.visit == 5].patient_id.to_numpy()
    ).all()
    shorter, _ = gen.generate(400, 3, transitions=[GroupTransition(2, 0.5)])
    assert shorter.equals(frame[frame.visit < 3].reset_index(drop=True))
    other, _ = ClinicGenerator(n_genes=20, n_proteins=5, seed=4).generate(400, 1)
    assert not other.equals(frame[frame.visit == 0])


def test_microarray_values_are_log_intensities():
    gen = ClinicGenerator(n_genes=8, n_proteins=2, modality="microarray", seed=1)
    frame, _ = gen.generate(200, 2)
    genes = frame[gen.feature_names[:8]]
    assert all(dtype == np.float64 for dtype in genes.dtypes)
    assert genes.mean().between(3, 14).all()


def test_bad_arguments():
    with pytest.raises(UnknownOptionError, match="valid options: microarray, rnaseq"):
        ClinicGenerator(modality="proteomics")
    gen = ClinicGenerator(n_genes=4, n_proteins=1)
    with pytest.raises(GeneratorConfigError, match="outside"):
        gen.generate(10, 3, transitions=[GroupTransition(5, 0.5)])
    with pytest.raises(GeneratorConfigError, match="module must be"):
        gen.generate(10, 3, module_shifts=[ModuleShift(1, 9, 2.0)])
    with pytest.raises(GeneratorConfigError, match="fraction"):
        gen.generate(10, 3, transitions=[GroupTransition(1, 0.0)])
