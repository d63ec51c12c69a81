"""IPIP: an ensemble of balanced ensembles for imbalanced binary classification.

IPIP (Identical Partitions for Imbalance Problems; Guillén-Teruel et al., arXiv 2503.04370; reference R
package ``antoniogt/FILMDrift``) trains ``p`` ensembles. Each ensemble is grown from balanced-ish subsets
(``np`` minority rows and ``round(np * 0.55 / 0.45)`` majority rows, drawn with replacement) and a model is
kept only when it strictly improves the ensemble's balanced accuracy on a stratified hold-out. ``p`` and
the per-ensemble cap ``b`` are chosen so that, with probability 0.99, every minority row is seen.

Two things are done differently from CalmOps' implementation:

* every ensemble draws from its own random stream (``SeedSequence.spawn``); CalmOps reseeded each subset
  with the same seed, so all its "partitions" were the same rows;
* the two classes can be any labels (strings, -1/1, ...); CalmOps assumed 0/1.

Everything here is pure (numpy and scikit-learn in, fitted objects out): the Dagster ``ipip`` pipeline
only calls :meth:`IPIPClassifier.fit` on the first block and :meth:`IPIPClassifier.update` on later ones,
and reports ``p_``, ``b_``, ``np_`` and ``kept_new_share_`` as metadata.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["IPIPClassifier", "draw_balanced_subset", "grow_ensemble", "ipip_sizes"]

# Share of the minority class drawn into each subset, and the accepted probability that a given
# minority row is never drawn (the "0.01" of the IPIP formulas).
SAMPLE_FRACTION = 0.75
MISS_PROBABILITY = 0.01


def ipip_sizes(n_minority: int) -> tuple[int, int, int]:
    """Sizes of an IPIP ensemble for a training set with ``n_minority`` minority rows.

    ``np = round(0.75 * n_minority)`` minority rows go into each subset;
    ``p = ceil(ln 0.01 / (np * ln(1 - 1/n_minority)))`` ensembles are needed so that each minority row is
    drawn at least once with probability 0.99; ``b = ceil(ln 0.01 / (np * ln(1 - 1/np)))`` is the most
    models one ensemble may hold (the same bound, within one subset).

    ``round`` is Python's (ties to even, like R's ``round`` in the reference implementation):
    ``n_minority = 6`` gives ``np = 4``, not 5.

    Parameters
    ----------
    n_minority : int
        Number of minority-class rows available for training. At least 2: with one row
        ``ln(1 - 1/1)`` is ``-inf`` and the formulas give ``p = b = 0``.

    Returns
    -------
    np_ : int
        Minority rows per subset.
    p : int
        Number of ensembles.
    b : int
        Maximum number of models per ensemble.

    Raises
    ------
    TypeError
        If ``n_minority`` is not an integer.
    ValueError
        If ``n_minority`` is below 2.

    Examples
    --------
    >>> ipip_sizes(10)
    (8, 6, 5)
    >>> ipip_sizes(1000)
    (750, 7, 5)
    """
    if isinstance(n_minority, bool) or not isinstance(n_minority, numbers.Integral):
        raise TypeError(f"n_minority must be an integer >= 2, got {n_minority!r}")
    if n_minority < 2:
        raise ValueError(
            f"IPIP needs at least 2 minority-class rows to train, got n_minority={n_minority} "
            "(with 1 row ln(1 - 1/n) is -inf and p = b = 0)."
        )
    n_minority = int(n_minority)
    np_ = round(SAMPLE_FRACTION * n_minority)
    log_miss = math.log(MISS_PROBABILITY)
    p = math.ceil(log_miss / (np_ * math.log(1 - 1 / n_minority)))
    b = math.ceil(log_miss / (np_ * math.log(1 - 1 / np_)))
    return np_, p, b


def draw_balanced_subset(
    minority_idx: np.ndarray,
    majority_idx: np.ndarray,
    n_minority_draw: int,
    n_majority_draw: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Row indices of one IPIP subset: both classes drawn with replacement.

    Parameters
    ----------
    minority_idx, majority_idx : ndarray of int
        Row indices of the minority and the majority class.
    n_minority_draw, n_majority_draw : int
        How many rows to draw from each class.
    rng : numpy.random.Generator
        The caller's random stream. Give each ensemble its own stream (``SeedSequence.spawn``), or all
        ensembles will train on the same rows, as they did in CalmOps.

    Returns
    -------
    ndarray of int
        ``n_minority_draw`` minority indices followed by ``n_majority_draw`` majority indices.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> draw_balanced_subset(np.array([0, 1]), np.array([2, 3, 4, 5]), 2, 3, rng)
    array([1, 1, 4, 3, 3])
    """
    return np.concatenate(
        [
            rng.choice(minority_idx, size=n_minority_draw, replace=True),
            rng.choice(majority_idx, size=n_majority_draw, replace=True),
        ]
    )


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (codes 0/1).

    Equal to ``sklearn.metrics.balanced_accuracy_score`` whenever both classes are present; with one class
    present (a pruning block may hold one) it is that class's recall, without sklearn's warning.
    """
    recalls = [np.mean(y_pred[y_true == c] == c) for c in (0, 1) if np.any(y_true == c)]
    return float(np.mean(recalls))


def grow_ensemble(
    candidates: Iterable,
    X_holdout: np.ndarray,
    y_holdout: np.ndarray,
    *,
    max_models: int,
    max_failures: int = 5,
) -> tuple[list, float]:
    """Grow one ensemble greedily from fitted candidate models.

    Candidates are taken one at a time; a candidate joins the ensemble only if the ensemble's balanced
    accuracy on the hold-out (prediction = argmax of the mean probability) strictly improves. Growth stops
    when the ensemble holds ``max_models`` models or after ``max_failures`` consecutive rejections, so a lazy
    iterable (a generator that fits a model per ``next``) fits no more models than needed.

    Parameters
    ----------
    candidates : iterable of fitted classifiers
        Each must have ``predict_proba`` returning two columns, for class codes 0 and 1.
    X_holdout : array-like of shape (n_samples, n_features)
        Hold-out rows.
    y_holdout : ndarray of int, shape (n_samples,)
        Hold-out labels encoded as 0/1.
    max_models : int
        Most models in the ensemble (IPIP's ``b``).
    max_failures : int, default=5
        Consecutive rejections after which growth stops.

    Returns
    -------
    models : list
        Accepted models, in acceptance order.
    score : float
        Balanced accuracy of the final ensemble on the hold-out.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> stumps = (DecisionTreeClassifier(max_depth=1).fit(X, y) for _ in range(10))
    >>> models, score = grow_ensemble(stumps, X, y, max_models=3)
    >>> len(models), score
    (1, 1.0)
    """
    y_holdout = np.asarray(y_holdout)
    models: list = []
    proba_sum = None
    best = -np.inf
    failures = 0
    for model in candidates:
        proba = model.predict_proba(X_holdout)
        trial = proba if proba_sum is None else proba_sum + proba
        score = _balanced_accuracy(y_holdout, trial.argmax(axis=1))
        if score > best:
            models.append(model)
            proba_sum, best, failures = trial, score, 0
        else:
            failures += 1
        if len(models) >= max_models or failures >= max_failures:
            break
    return models, float(best)


def _mean_proba(models: Iterable, X: np.ndarray) -> np.ndarray:
    """Mean of ``predict_proba`` over ``models``."""
    probas = [model.predict_proba(X) for model in models]
    return np.mean(probas, axis=0)


def _stratified_holdout(
    y_enc: np.ndarray, holdout_size: float, rng: np.random.Generator, *, min_train: int, purpose: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices per class: ``max(1, round(holdout_size * n_class))`` held out, the rest kept.

    Raises a ValueError naming ``purpose`` if a class would keep fewer than ``min_train`` rows.
    """
    keep, hold = [], []
    for code in (0, 1):
        idx = rng.permutation(np.flatnonzero(y_enc == code))
        n_hold = max(1, round(holdout_size * idx.size))
        if idx.size - n_hold < min_train:
            raise ValueError(
                f"IPIP needs at least {min_train + n_hold} rows of each class for {purpose} "
                f"({n_hold} held out, {min_train} kept); class code {code} has {idx.size}."
            )
        hold.append(idx[:n_hold])
        keep.append(idx[n_hold:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


def _entropy_from(random_state) -> int:
    """Entropy for ``numpy.random.SeedSequence`` from a scikit-learn style ``random_state``."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if (
        isinstance(random_state, numbers.Integral)
        and not isinstance(random_state, bool)
        and random_state >= 0
    ):
        return int(random_state)
    raise ValueError(
        f"random_state must be None, a non-negative int or a numpy.random.RandomState; got {random_state!r}"
    )


class IPIPClassifier(ClassifierMixin, BaseEstimator):
    """IPIP ensemble for imbalanced binary classification, refreshed block by block.

    ``fit`` holds out a stratified ``holdout_size`` share of the block, computes ``np_, p_, b_`` from the
    minority count of the rest (:func:`ipip_sizes`) and grows ``p_`` ensembles. Ensemble ``k`` has its own
    random stream; each candidate model is fitted (a clone of ``estimator``) on ``np_`` minority and
    ``round(np_ * majority_share / (1 - majority_share))`` majority rows drawn with replacement, and is kept
    only if it strictly raises the ensemble's balanced accuracy on the hold-out (:func:`grow_ensemble`;
    at most ``b_`` models, stop after ``max_failures`` consecutive rejections). ``predict_proba`` is the mean
    over all models of all ensembles.

    :meth:`update` adds a new block: it grows ``p`` new ensembles on it, pools them with the current ones and
    keeps the ``p`` best by balanced accuracy on pruning data (the next block when given, else a stratified
    split of the new block).

    Why: a model fitted on 1:20 data learns mostly the majority class. Here every model sees near-balanced
    data, and every model must earn its place on a balanced metric, so the ensemble trades a little majority
    accuracy for much better minority recall (``benchmarks/ipip_bench.py``), while each model trains on only
    ``~2.2 * np_`` rows, which keeps fitting cheap.

    Parameters
    ----------
    estimator : classifier, default=None
        Base model, cloned for every candidate; it needs ``predict_proba``. Its ``random_state``, if it has
        one, is set from the ensemble's stream. ``None`` means ``DecisionTreeClassifier()``.
    majority_share : float, default=0.55
        Share of majority rows in each subset (IPIP: 0.55), strictly between 0 and 1.
    max_failures : int, default=5
        Consecutive rejected candidates after which an ensemble stops growing.
    holdout_size : float, default=0.2
        Share of each class held out to judge ensemble growth (and, in :meth:`update` without pruning data,
        held out again to prune), strictly between 0 and 1. At least one row per class is held out.
    random_state : int, RandomState instance or None, default=None
        Seeds a ``numpy.random.SeedSequence``; block ``k`` (0 for ``fit``) uses the child stream
        ``spawn_key=(k,)``, split again per ensemble. An int makes ``fit`` and every ``update`` reproducible.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two class labels, sorted.
    estimator_ : classifier
        Unfitted template the models are cloned from.
    ensembles_ : list of list of classifiers
        The kept ensembles; their models were fitted on class codes 0/1 (index into ``classes_``).
    ensemble_scores_ : ndarray of shape (n_ensembles,)
        Balanced accuracy of each kept ensemble on the data that judged it (growth hold-out after ``fit``,
        pruning data after ``update``).
    np_, p_, b_ : int
        IPIP sizes of the last block: minority rows per subset, number of ensembles, models-per-ensemble cap.
    n_majority_draw_ : int
        Majority rows per subset in the last block.
    minority_class_ : int, str or other label
        Minority class of the last block (the first of ``classes_`` on a tie), as a plain Python value.
    kept_new_share_ : float
        Share of the kept ensembles that were built from the last block (1.0 after ``fit``).
    n_blocks_ : int
        Number of blocks learnt: 1 after ``fit``, plus one per ``update``.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during ``fit``, when ``X`` had string column names.

    Notes
    -----
    The mean in ``predict_proba`` is over models, not ensembles, so an ensemble with more models weighs more
    (as in IPIP). Files written with ``skops.io.dump`` list ``calmops_dagster.learning.ipip.IPIPClassifier`` (and, for
    tree base models, ``sklearn.tree._tree.Tree``) among their untrusted types; a model store should pass an
    allow-list of those to ``skops.io.load(trusted=...)`` rather than whatever the file asks for.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=1200, weights=[0.95], random_state=0)
    >>> labels = np.where(y == 1, "fraud", "ok")
    >>> clf = IPIPClassifier(random_state=0).fit(X[:600], labels[:600])
    >>> clf.classes_.tolist(), clf.minority_class_
    (['fraud', 'ok'], 'fraud')
    >>> clf.np_, clf.p_, clf.b_
    (20, 7, 5)
    >>> clf = clf.update(X[600:900], labels[600:900], X_prune=X[900:], y_prune=labels[900:])
    >>> clf.n_blocks_, len(clf.ensembles_) == clf.p_, round(clf.kept_new_share_, 2)
    (2, True, 0.29)
    >>> clf.predict_proba(X[:3]).sum(axis=1)
    array([1., 1., 1.])
    """

    def __init__(
        self, estimator=None, *, majority_share=0.55, max_failures=5, holdout_size=0.2, random_state=None
    ):
        self.estimator = estimator
        self.majority_share = majority_share
        self.max_failures = max_failures
        self.holdout_size = holdout_size
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Binary only: sklearn then checks that fit refuses multiclass targets with
        # "Only binary classification is supported." and feeds binary data to the other checks.
        tags.classifier_tags.multi_class = False
        return tags

    # -- validation -------------------------------------------------------------------------------------

    def _check_params(self):
        """Validate the constructor arguments; return the unfitted base estimator."""
        for name in ("majority_share", "holdout_size"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < 1:
                raise ValueError(f"{name} must be a float strictly between 0 and 1, got {value!r}")
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, numbers.Integral)
            or self.max_failures < 1
        ):
            raise ValueError(f"max_failures must be an int >= 1, got {self.max_failures!r}")
        estimator = DecisionTreeClassifier() if self.estimator is None else self.estimator
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict_proba")):
            raise ValueError(
                "estimator must be a classifier with fit and predict_proba (e.g. DecisionTreeClassifier, "
                f"RandomForestClassifier, LGBMClassifier) or None; got {estimator!r}"
            )
        return estimator

    def _encode(self, y, what: str) -> np.ndarray:
        """Encode labels of a later block as 0/1 codes of ``classes_``; refuse unknown labels."""
        check_classification_targets(y)
        known = np.isin(y, self.classes_)
        if not known.all():
            unknown = np.unique(np.asarray(y)[~known]).tolist()
            raise ValueError(
                f"{what} has labels {unknown} that were not seen in fit; valid labels are "
                f"{self.classes_.tolist()}"
            )
        return (np.asarray(y) == self.classes_[1]).astype(np.intp)

    # -- training ---------------------------------------------------------------------------------------

    def _fit_candidate(self, X, y_enc, rows, rng):
        model = clone(self.estimator_)
        if "random_state" in model.get_params(deep=False):
            model.set_params(random_state=int(rng.integers(np.iinfo(np.int32).max)))
        return model.fit(X[rows], y_enc[rows])

    def _build_ensembles(self, X, y_enc, seed_seq):
        """Grow the ensembles of one block; return them, their hold-out scores and the block's sizes."""
        (split_seq,) = seed_seq.spawn(1)
        train_idx, hold_idx = _stratified_holdout(
            y_enc,
            self.holdout_size,
            np.random.default_rng(split_seq),
            min_train=2,
            purpose="training (2 minority rows at least) and the growth hold-out",
        )
        y_train = y_enc[train_idx]
        counts = np.bincount(y_train, minlength=2)
        minority = int(np.argmin(counts))
        np_, p, b = ipip_sizes(int(counts[minority]))
        n_majority_draw = max(1, round(np_ * self.majority_share / (1 - self.majority_share)))
        minority_idx = train_idx[y_train == minority]
        majority_idx = train_idx[y_train != minority]
        X_hold, y_hold = X[hold_idx], y_enc[hold_idx]

        ensembles, scores = [], []
        for stream in seed_seq.spawn(p):
            rng = np.random.default_rng(stream)
            candidates = (
                self._fit_candidate(
                    X, y_enc, draw_balanced_subset(minority_idx, majority_idx, np_, n_majority_draw, rng), rng
                )
                for _ in itertools.repeat(None)  # endless: grow_ensemble stops pulling
            )
            models, score = grow_ensemble(
                candidates, X_hold, y_hold, max_models=b, max_failures=self.max_failures
            )
            ensembles.append(models)
            scores.append(score)
        sizes = {
            "np_": np_,
            "p_": p,
            "b_": b,
            "n_majority_draw_": n_majority_draw,
            "minority_class_": self.classes_[minority : minority + 1].tolist()[0],
        }
        return ensembles, np.asarray(scores), sizes

    def _block_seed_sequence(self, block_index: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self._seed_entropy, spawn_key=(block_index,))

    def _set_block_attributes(self, sizes: dict) -> None:
        for name, value in sizes.items():
            setattr(self, name, value)

    def fit(self, X, y):
        """Fit the IPIP ensembles on one block.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows.
        y : array-like of shape (n_samples,)
            Exactly two distinct labels, of any type; each needs at least 3 rows (one held out, two kept).

        Returns
        -------
        self : IPIPClassifier
            The fitted estimator.

        Raises
        ------
        ValueError
            If ``y`` does not hold exactly two classes (the message lists what it found), a class has too
            few rows, or a parameter is invalid.
        """
        estimator = self._check_params()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if classes.size != 2:
            shown = classes[:10].tolist()
            raise ValueError(
                "Only binary classification is supported. IPIPClassifier needs exactly 2 classes in y; "
                f"found {classes.size} class(es): {shown}{' ...' if classes.size > 10 else ''}"
            )
        self.classes_ = classes
        self.estimator_ = clone(estimator)
        self._seed_entropy = _entropy_from(self.random_state)
        ensembles, scores, sizes = self._build_ensembles(X, y_enc, self._block_seed_sequence(0))
        self.ensembles_ = ensembles
        self.ensemble_scores_ = scores
        self._set_block_attributes(sizes)
        self.kept_new_share_ = 1.0
        self.n_blocks_ = 1
        return self

    def update(self, X, y, X_prune=None, y_prune=None):
        """Learn a new block: grow ``p`` new ensembles, pool with the old ones, keep the best ``p``.

        The model is changed in place and returned, like ``partial_fit``: the pipeline loads a fresh copy of
        the champion from the model store for every block, so copying here would only double the memory.
        To keep an in-memory model untouched, call ``copy.deepcopy(model).update(...)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The new block.
        y : array-like of shape (n_samples,)
            Its labels, both classes of ``classes_`` present, no other label.
        X_prune, y_prune : array-like, default=None
            Pruning data, normally the next block (transductive pruning: block ``k`` is then learnt once the
            labels of block ``k + 1`` are in); labels must be among ``classes_``.
            When omitted, a stratified ``holdout_size`` share of the new block is held out for pruning and
            not used to build the new ensembles (reusing the growth hold-out would favour the new ensembles,
            which were selected on it).

        Returns
        -------
        self : IPIPClassifier
            With ``p_`` ensembles: the best of the old and new ones; ties go to the new ensembles.
        """
        check_is_fitted(self)
        if (X_prune is None) != (y_prune is None):
            raise ValueError("give both X_prune and y_prune, or neither")
        X, y = validate_data(self, X, y, reset=False)
        y_enc = self._encode(y, "y")
        seed_seq = self._block_seed_sequence(self.n_blocks_)
        if X_prune is None:
            (split_seq,) = seed_seq.spawn(1)
            build_idx, prune_idx = _stratified_holdout(
                y_enc,
                self.holdout_size,
                np.random.default_rng(split_seq),
                min_train=3,
                purpose="pruning without X_prune (3 rows kept to train)",
            )
            X_prune, y_prune_enc = X[prune_idx], y_enc[prune_idx]
            X, y_enc = X[build_idx], y_enc[build_idx]
        else:
            X_prune, y_prune = validate_data(self, X_prune, y_prune, reset=False)
            y_prune_enc = self._encode(y_prune, "y_prune")

        new_ensembles, _, sizes = self._build_ensembles(X, y_enc, seed_seq)
        pool = new_ensembles + self.ensembles_
        scores = np.array(
            [_balanced_accuracy(y_prune_enc, _mean_proba(ens, X_prune).argmax(axis=1)) for ens in pool]
        )
        # Stable sort on -score: among equal scores the new ensembles (first in the pool) win.
        keep = np.argsort(-scores, kind="stable")[: sizes["p_"]]
        self.ensembles_ = [pool[i] for i in keep]
        self.ensemble_scores_ = scores[keep]
        self.kept_new_share_ = float(np.mean(keep < len(new_ensembles)))
        self._set_block_attributes(sizes)
        self.n_blocks_ += 1
        return self

    # -- prediction -------------------------------------------------------------------------------------

    def predict_proba(self, X):
        """Mean class probabilities over every model of every ensemble.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Columns follow ``classes_``; rows sum to 1.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return _mean_proba((m for ens in self.ensembles_ for m in ens), X)

    def predict(self, X):
        """Class with the highest mean probability (the first of ``classes_`` on a tie).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
