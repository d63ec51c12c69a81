"""Benchmark: IPIP against random forests on imbalanced binary data.

For each seed, ``make_classification`` draws an imbalanced data set (minority share ``--minority``,
1:32 by default), split 50/50 stratified into train and test. Each model is fitted on the train half and
scored on the test half: balanced accuracy, minority-class recall and fit time (wall clock, single
process). Baselines, in the same run:

* ``RandomForestClassifier()``: a plain random forest, blind to the imbalance;
* ``RandomForestClassifier(class_weight="balanced")``: the usual cheap fix.

Run ``python benchmarks/ipip_bench.py`` (``--help`` for the options). Figures are mean ± standard deviation
over the seeds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import balanced_accuracy_score, recall_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from calmops_dagster.learning.ipip import IPIPClassifier


def models(seed: int) -> dict:
    """The contenders, each seeded with ``seed``."""
    return {
        "RF (plain, 100 trees)": RandomForestClassifier(n_estimators=100, random_state=seed),
        "RF class_weight=balanced": RandomForestClassifier(
            n_estimators=100, class_weight="balanced", random_state=seed
        ),
        "IPIP, DecisionTree base (default)": IPIPClassifier(DecisionTreeClassifier(), random_state=seed),
        "IPIP, RF(10 trees) base": IPIPClassifier(RandomForestClassifier(n_estimators=10), random_state=seed),
    }


def run(seeds: list[int], n_samples: int, minority: float) -> dict[str, list[tuple[float, float, float]]]:
    """Fit every contender on every seed; return ``{name: [(bal_acc, minority_recall, fit_s), ...]}``."""
    results: dict[str, list[tuple[float, float, float]]] = {}
    for seed in seeds:
        X, y = make_classification(
            n_samples=n_samples,
            n_features=20,
            n_informative=6,
            n_redundant=4,
            weights=[1 - minority],
            flip_y=0.01,
            class_sep=0.8,
            random_state=seed,
        )
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.5, stratify=y, random_state=seed
        )
        for name, model in models(seed).items():
            start = time.perf_counter()
            model.fit(X_train, y_train)
            fit_s = time.perf_counter() - start
            pred = model.predict(X_test)
            results.setdefault(name, []).append(
                (balanced_accuracy_score(y_test, pred), recall_score(y_test, pred, pos_label=1), fit_s)
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (data sets), default 3")
    parser.add_argument("--n-samples", type=int, default=10_000, help="rows per data set, default 10000")
    parser.add_argument("--minority", type=float, default=0.03, help="minority share, default 0.03 (1:32)")
    args = parser.parse_args()

    results = run(list(range(args.seeds)), args.n_samples, args.minority)
    ratio = (1 - args.minority) / args.minority
    print(
        f"{args.n_samples} rows, minority share {args.minority} (1:{ratio:.0f}), 50/50 stratified split, "
        f"seeds 0..{args.seeds - 1}; mean ± sd"
    )
    header = f"{'model':<36} {'balanced acc':>15} {'minority recall':>17} {'fit time (s)':>15}"
    print(header)
    print("-" * len(header))
    for name, rows in results.items():
        cols = np.array(rows)
        mean, sd = cols.mean(axis=0), cols.std(axis=0)
        print(
            f"{name:<36} {mean[0]:>8.3f} ± {sd[0]:.3f} {mean[1]:>10.3f} ± {sd[1]:.3f} "
            f"{mean[2]:>8.2f} ± {sd[2]:.2f}"
        )


if __name__ == "__main__":
    main()
