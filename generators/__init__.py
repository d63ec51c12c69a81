"""Data generators: block files a pipeline can consume, with the ground truth of the drift they contain.

Modules (imported on their own, so that importing the package stays cheap):

- :mod:`generators.synthetic`: river streams (Agrawal, SEA, Hyperplane, Sine, STAGGER, RandomRBF) behind
  one factory, with abrupt or gradual concept drift between settings;
- :mod:`generators.real`: :class:`~generators.real.RealGenerator`, synthesis learnt from a real table
  (FCS with cart/rf/lgbm, SDV, resample);
- :mod:`generators.fidelity`: how close a synthetic table is to the real one;
- :mod:`generators.clinic`: :class:`~generators.clinic.ClinicGenerator`, longitudinal omics cohorts;
- :mod:`generators.drift_injection`: :class:`~generators.drift_injection.DriftInjector`, known drift on
  any table, with its ground truth;
- :mod:`generators.writer`: one file per block plus ``ground_truth.json``;
- :mod:`generators.cli`: the ``calmops generate`` sub-commands;
- :mod:`generators.errors`: the typed errors for bad arguments.
"""
