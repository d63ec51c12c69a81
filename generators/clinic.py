"""Synthetic clinical cohorts: demographics, omics and proteins, a diagnosis, and longitudinal visits.

Molecular features are organised in co-regulated modules linked by a Gaussian copula (RNA-Seq counts,
microarray intensities, protein levels), visits of a patient are correlated, and drift is recorded in the
ground truth: control-to-disease transitions, module shifts, new visits of the same cohort.
The model, its marginals and each kind of drift: docs/generators.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from calmops_dagster.generators.errors import GeneratorConfigError, check_option

MODALITIES = ("rnaseq", "microarray")


@dataclass(frozen=True)
class GroupTransition:
    """From ``visit`` on, a ``fraction`` of the patients still in the control group turn into disease."""

    visit: int
    fraction: float


@dataclass(frozen=True)
class ModuleShift:
    """From ``visit`` on, every feature of ``module`` has its mean multiplied by ``fold_change``."""

    visit: int
    module: int
    fold_change: float


class ClinicGenerator:
    """Generate a longitudinal clinical cohort with omics features and a diagnosis.

    Parameters
    ----------
    n_genes : int
        Number of genes.
    n_proteins : int
        Number of proteins.
    n_modules : int
        Number of co-regulated modules; gene ``g`` belongs to module ``g % n_modules``, protein ``k`` to
        module ``k % n_modules``.
    modality : {"rnaseq", "microarray"}
        Negative-binomial counts or normal log2 intensities for the genes.
    disease_prevalence : float
        Share of disease patients at the first visit.
    disease_modules : int
        The first ``disease_modules`` modules differ between groups, alternately up (x ``disease_fold``)
        and down (/ ``disease_fold``).
    disease_fold : float
        Fold change of the disease modules.
    module_correlation : float
        Latent correlation between two features of the same module.
    visit_correlation : float
        Share of latent variance a patient keeps from one visit to the next.
    seed : int
        Seed of everything; the same arguments give the same cohort.

    Examples
    --------
    >>> frame, truth = ClinicGenerator(n_genes=6, n_proteins=2, seed=0).generate(n_patients=4, n_visits=2)
    >>> frame.shape, truth
    ((8, 14), [])
    """

    def __init__(
        self,
        n_genes: int = 50,
        n_proteins: int = 10,
        n_modules: int = 5,
        modality: str = "rnaseq",
        disease_prevalence: float = 0.3,
        disease_modules: int = 2,
        disease_fold: float = 2.0,
        module_correlation: float = 0.6,
        visit_correlation: float = 0.7,
        seed: int = 0,
    ) -> None:
        check_option("modality", modality, MODALITIES)
        if n_genes < 1 or n_proteins < 0 or n_modules < 1:
            raise GeneratorConfigError("need n_genes >= 1, n_proteins >= 0 and n_modules >= 1")
        for name, value in (
            ("disease_prevalence", disease_prevalence),
            ("module_correlation", module_correlation),
            ("visit_correlation", visit_correlation),
        ):
            if not 0.0 <= value < 1.0:
                raise GeneratorConfigError(f"{name} must be in [0, 1), got {value}")
        if not 0 <= disease_modules <= n_modules or disease_fold <= 0:
            raise GeneratorConfigError("need 0 <= disease_modules <= n_modules and disease_fold > 0")
        self.n_genes = n_genes
        self.n_proteins = n_proteins
        self.n_modules = n_modules
        self.modality = modality
        self.disease_prevalence = disease_prevalence
        self.disease_modules = disease_modules
        self.disease_fold = disease_fold
        self.module_correlation = module_correlation
        self.visit_correlation = visit_correlation
        self.seed = seed

    # -- fixed parts of the cohort ---------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """Gene then protein column names."""
        return [f"gene_{g:03d}" for g in range(self.n_genes)] + [
            f"prot_{k:03d}" for k in range(self.n_proteins)
        ]

    @property
    def feature_modules(self) -> np.ndarray:
        """Module of each feature, in :attr:`feature_names` order."""
        return np.concatenate(
            [np.arange(self.n_genes) % self.n_modules, np.arange(self.n_proteins) % self.n_modules]
        )

    def module_columns(self, module: int) -> list[str]:
        """Names of the genes and proteins of one module."""
        if not 0 <= module < self.n_modules:
            raise GeneratorConfigError(f"module must be in [0, {self.n_modules}), got {module}")
        return [n for n, m in zip(self.feature_names, self.feature_modules) if m == module]

    def _copula_factor(self) -> np.ndarray:
        """Cholesky factor of the latent correlation: ``module_correlation`` inside modules, 0 across."""
        modules = self.feature_modules
        corr = np.where(modules[:, None] == modules[None, :], self.module_correlation, 0.0)
        np.fill_diagonal(corr, 1.0)
        return np.linalg.cholesky(corr)

    def _marginals(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0])
        return {
            "gene_mean": rng.lognormal(np.log(100.0), 1.0, self.n_genes),  # RNA-Seq mean count
            "gene_dispersion": rng.uniform(0.05, 0.5, self.n_genes),  # NB: var = mu + phi mu^2
            "gene_log2": rng.normal(8.0, 1.5, self.n_genes),  # microarray mean log2 intensity
            "gene_sd": rng.uniform(0.3, 1.0, self.n_genes),
            "prot_log": rng.normal(3.0, 1.0, self.n_proteins),  # log concentration
            "prot_sd": rng.uniform(0.2, 0.6, self.n_proteins),
        }

    def _disease_log_fold(self) -> np.ndarray:
        """Natural-log fold change of every feature in disease patients."""
        fold = np.zeros(self.n_modules)
        for m in range(self.disease_modules):
            fold[m] = np.log(self.disease_fold) * (1 if m % 2 == 0 else -1)
        return fold[self.feature_modules]

    # -- generation ------------------------------------------------------------------------------------
    def generate(
        self,
        n_patients: int,
        n_visits: int,
        transitions: Sequence[GroupTransition] = (),
        module_shifts: Sequence[ModuleShift] = (),
        first_visit: int = 0,
    ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        """Generate visits ``first_visit .. n_visits - 1`` of ``n_patients`` patients.

        Returns
        -------
        frame : pandas.DataFrame
            One row per patient and visit: ``patient_id``, ``visit``, ``age``, ``sex``, ``bmi``, the genes and
            proteins, ``diagnosis``; sorted by visit then patient, so each visit is a block.
        ground_truth : list of dict
            One record per transition and module shift, with the visits and columns affected.
        """
        if n_patients < 1 or not 0 <= first_visit < n_visits:
            raise GeneratorConfigError("need n_patients >= 1 and 0 <= first_visit < n_visits")
        for event in (*transitions, *module_shifts):
            if not 0 <= event.visit < n_visits:
                raise GeneratorConfigError(f"drift visit {event.visit} outside [0, {n_visits})")
        for t in transitions:
            if not 0.0 < t.fraction <= 1.0:
                raise GeneratorConfigError(f"transition fraction must be in (0, 1], got {t.fraction}")
        for s in module_shifts:
            self.module_columns(s.module)
            if s.fold_change <= 0:
                raise GeneratorConfigError(f"fold_change must be positive, got {s.fold_change}")

        rng = np.random.default_rng([self.seed, 1])
        base_age = np.clip(rng.normal(55, 12, n_patients), 18, 85)
        sex = rng.choice(np.array(["F", "M"]), n_patients)
        bmi = np.clip(rng.normal(27, 4, n_patients), 16, 50)
        disease_at = self._disease_onsets(n_patients, n_visits, transitions, rng)
        factor = self._copula_factor()
        marg = self._marginals()
        disease_fold = self._disease_log_fold()
        n_features = factor.shape[0]
        patient_latent = rng.standard_normal((n_patients, n_features)) @ factor.T

        frames = []
        for visit in range(n_visits):
            vrng = np.random.default_rng([self.seed, 2, visit])
            fresh = vrng.standard_normal((n_patients, n_features)) @ factor.T
            if visit < first_visit:
                continue
            latent = (
                np.sqrt(self.visit_correlation) * patient_latent + np.sqrt(1 - self.visit_correlation) * fresh
            )
            diseased = disease_at <= visit
            log_fold = np.outer(diseased, disease_fold)
            for s in module_shifts:
                if visit >= s.visit:
                    log_fold[:, self.feature_modules == s.module] += np.log(s.fold_change)
            values = self._features(latent, log_fold, marg, vrng)
            part = pd.DataFrame(values, columns=self.feature_names)
            if self.modality == "rnaseq":
                part[self.feature_names[: self.n_genes]] = part[self.feature_names[: self.n_genes]].astype(
                    np.int64
                )
            part.insert(0, "bmi", np.round(bmi + vrng.normal(0, 0.5, n_patients), 1))
            part.insert(0, "sex", sex)
            part.insert(0, "age", (base_age + visit).astype(int))
            part.insert(0, "visit", visit)
            part.insert(0, "patient_id", [f"P{i:05d}" for i in range(n_patients)])
            part["diagnosis"] = diseased.astype(int)
            frames.append(part)
        frame = pd.concat(frames, ignore_index=True)
        return frame, self._ground_truth(transitions, module_shifts, disease_at, n_visits)

    def _disease_onsets(
        self, n_patients: int, n_visits: int, transitions: Sequence[GroupTransition], rng: np.random.Generator
    ) -> np.ndarray:
        """Visit at which each patient is diseased (``n_visits`` = never within the study)."""
        onset = np.where(rng.random(n_patients) < self.disease_prevalence, 0, n_visits)
        for t in sorted(transitions, key=lambda t: t.visit):
            controls = np.flatnonzero(onset > t.visit)
            trng = np.random.default_rng([self.seed, 3, t.visit])
            onset[controls[trng.random(controls.size) < t.fraction]] = t.visit
        return onset

    def _features(
        self, latent: np.ndarray, log_fold: np.ndarray, marg: dict[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        g = self.n_genes
        u = stats.norm.cdf(latent)
        out = np.empty(latent.shape)
        if self.modality == "rnaseq":
            library = rng.lognormal(0.0, 0.2, (latent.shape[0], 1))
            mean = marg["gene_mean"] * np.exp(log_fold[:, :g]) * library
            size = 1.0 / marg["gene_dispersion"]
            out[:, :g] = stats.nbinom.ppf(np.clip(u[:, :g], 1e-12, 1 - 1e-12), size, size / (size + mean))
        else:
            out[:, :g] = marg["gene_log2"] + log_fold[:, :g] / np.log(2) + marg["gene_sd"] * latent[:, :g]
        out[:, g:] = np.exp(marg["prot_log"] + log_fold[:, g:] + marg["prot_sd"] * latent[:, g:])
        return out

    def _ground_truth(
        self,
        transitions: Sequence[GroupTransition],
        module_shifts: Sequence[ModuleShift],
        disease_at: np.ndarray,
        n_visits: int,
    ) -> list[dict[str, Any]]:
        disease_columns = [c for m in range(self.disease_modules) for c in self.module_columns(m)]
        records: list[dict[str, Any]] = []
        for t in transitions:
            records.append(
                {
                    "type": "group_transition",
                    "visit": t.visit,
                    "fraction": t.fraction,
                    "n_patients": int(np.sum(disease_at == t.visit)),
                    "blocks": list(range(t.visit, n_visits)),
                    "columns": disease_columns + ["diagnosis"],
                }
            )
        for s in module_shifts:
            records.append(
                {
                    "type": "module_shift",
                    "visit": s.visit,
                    "module": s.module,
                    "fold_change": s.fold_change,
                    "blocks": list(range(s.visit, n_visits)),
                    "columns": self.module_columns(s.module),
                }
            )
        return records
