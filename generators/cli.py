"""``calmops generate``: write generated (and drift-injected) block files plus ``ground_truth.json``.

The lead's ``calmops_dagster/interfaces/cli.py`` owns the top-level parser and calls :func:`add_generate_command`.
Sub-commands::

    calmops generate synthetic --generator sea --drift-to '{"variant": 3}' --drift-block 5 --out DIR
    calmops generate real --input real.csv --method cart --target y --out DIR
    calmops generate clinic --genes 50 --proteins 10 --transition 3:0.5 --module-shift 6:2:3.0 --out DIR
    calmops generate inject --input table.csv --spec drifts.json --out DIR

Every sub-command takes ``--out DIR --blocks N --rows-per-block M --seed S --format {csv,parquet}`` and an
optional ``--inject SPEC``: a JSON list (inline or a file path) of injections run by
:class:`~generators.drift_injection.DriftInjector`, e.g.
``[{"method": "feature_drift", "columns": ["x0"], "kind": "shift", "magnitude": 2, "blocks": [6, 7]}]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from calmops_dagster.generators.errors import GeneratorConfigError

# pandas, river and scipy.stats take seconds to import; every ``calmops`` command builds this parser, so the
# modules that need them are imported inside the handlers, and their option names are repeated here (a test
# keeps them equal to ``generators.synthetic.GENERATORS``, ``generators.clinic.MODALITIES``,
# ``generators.real.METHODS``/``SDV_MODELS`` and ``generators.writer.FORMATS``).
GENERATOR_CHOICES = ("agrawal", "hyperplane", "randomrbf", "sea", "sine", "stagger")
MODALITY_CHOICES = ("microarray", "rnaseq")
METHOD_CHOICES = ("cart", "rf", "lgbm", "sdv", "resample")
SDV_MODEL_CHOICES = ("gaussian_copula", "ctgan", "tvae")
FORMAT_CHOICES = ("csv", "parquet")


def _json_arg(text: str) -> Any:
    """Parse JSON given inline or as the path of a JSON file."""
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.is_file() else text)
    except json.JSONDecodeError as exc:
        raise GeneratorConfigError(f"not valid JSON (inline or file): {text!r}: {exc}") from exc


def _inject(frame: pd.DataFrame, args: argparse.Namespace, truth: list[dict[str, Any]]) -> pd.DataFrame:
    """Run the ``--inject``/``--spec`` injections on ``frame`` and extend ``truth``."""
    spec = getattr(args, "inject", None)
    if not spec:
        return frame
    steps = _json_arg(spec)
    if not isinstance(steps, list) or not all(isinstance(s, dict) and "method" in s for s in steps):
        raise GeneratorConfigError('injection spec must be a JSON list of objects with a "method" key')
    from calmops_dagster.generators.drift_injection import DriftInjector

    injector = DriftInjector(frame, seed=args.seed, block_col=args.block_col)
    for step in steps:
        kwargs = {k: v for k, v in step.items() if k != "method"}
        injector.apply(step["method"], **kwargs)
    truth.extend(injector.ground_truth)
    return injector.frame


def _finish(frame: pd.DataFrame, args: argparse.Namespace, truth: list[dict[str, Any]], source: dict) -> int:
    from calmops_dagster.generators.writer import write_blocks

    frame = _inject(frame, args, truth)
    paths = write_blocks(frame, args.out, args.block_col, args.format, truth, source)
    print(f"wrote {len(paths)} block files ({len(frame)} rows) and ground_truth.json to {args.out}")
    return 0


def _run_synthetic(args: argparse.Namespace) -> int:
    from calmops_dagster.generators.synthetic import ConceptDrift, generate_synthetic
    from calmops_dagster.generators.writer import assign_blocks

    n_rows = args.blocks * args.rows_per_block
    drifts = []
    if args.drift_to is not None:
        if args.drift_block is None or not 0 < args.drift_block < args.blocks:
            raise GeneratorConfigError(f"--drift-to needs --drift-block in [1, {args.blocks})")
        drifts.append(
            ConceptDrift(args.drift_block * args.rows_per_block, _json_arg(args.drift_to), args.drift_width)
        )
    settings = _json_arg(args.settings) if args.settings else {}
    frame, truth = generate_synthetic(args.generator, n_rows, args.seed, settings, drifts, args.target)
    frame = assign_blocks(frame, args.rows_per_block, args.block_col)
    source = {"generator": args.generator, "settings": settings, "seed": args.seed}
    return _finish(frame, args, truth, source)


def _run_real(args: argparse.Namespace) -> int:
    from calmops_dagster.generators.fidelity import synthesize_and_report
    from calmops_dagster.generators.real import RealGenerator
    from calmops_dagster.generators.writer import assign_blocks, read_table

    real = read_table(args.input)
    generator = RealGenerator(
        args.method, target=args.target, seed=args.seed, sdv_model=args.sdv_model, sdv_epochs=args.sdv_epochs
    )
    synthetic, report = synthesize_and_report(
        real, generator, args.blocks * args.rows_per_block, args.test_size
    )
    print(report.to_text())
    frame = assign_blocks(synthetic, args.rows_per_block, args.block_col)
    source = {
        "generator": "real",
        "method": args.method,
        "input": str(args.input),
        "seed": args.seed,
        "fidelity": report.to_dict(),
    }
    return _finish(frame, args, [], source)


def _pair(text: str, n: int, flag: str) -> list[str]:
    parts = text.split(":")
    if len(parts) != n:
        raise GeneratorConfigError(f"{flag} expects {n} values separated by ':', got {text!r}")
    return parts


def _run_clinic(args: argparse.Namespace) -> int:
    from calmops_dagster.generators.clinic import ClinicGenerator, GroupTransition, ModuleShift

    try:
        transitions = [
            GroupTransition(int(v), float(f))
            for v, f in (_pair(t, 2, "--transition") for t in args.transition)
        ]
        shifts = [
            ModuleShift(int(v), int(m), float(f))
            for v, m, f in (_pair(s, 3, "--module-shift") for s in args.module_shift)
        ]
    except ValueError as exc:
        raise GeneratorConfigError(f"bad --transition/--module-shift value: {exc}") from exc
    generator = ClinicGenerator(
        n_genes=args.genes,
        n_proteins=args.proteins,
        n_modules=args.modules,
        modality=args.modality,
        seed=args.seed,
    )
    frame, truth = generator.generate(args.rows_per_block, args.blocks, transitions, shifts)
    if args.block_col != "visit":
        frame.insert(0, args.block_col, frame["visit"])
    source = {
        "generator": "clinic",
        "modality": args.modality,
        "seed": args.seed,
        "patients": args.rows_per_block,
    }
    return _finish(frame, args, truth, source)


def _run_inject(args: argparse.Namespace) -> int:
    from calmops_dagster.generators.writer import assign_blocks, read_table

    frame = read_table(args.input)
    if args.block_col not in frame.columns:
        frame = assign_blocks(
            frame.head(args.blocks * args.rows_per_block), args.rows_per_block, args.block_col
        )
    return _finish(frame, args, [], {"generator": "inject", "input": str(args.input), "seed": args.seed})


def _handler(run: Any) -> Any:
    """Wrap a runner so a bad argument prints a clear message and returns exit code 2."""

    def handle(args: argparse.Namespace, home: Any = None) -> int:
        # ``home`` lets calmops_dagster.interfaces.cli call every handler as ``func(args, home)``; generate ignores it.
        try:
            return run(args)
        except (GeneratorConfigError, FileNotFoundError) as exc:
            print(f"calmops generate: error: {exc}", file=sys.stderr)
            return 2

    return handle


def add_generate_command(subparsers: Any) -> None:
    """Register ``generate`` and its sub-commands on an argparse ``subparsers`` object.

    Each sub-command sets ``func``: a handler taking the parsed ``argparse.Namespace`` (and, optionally, the
    CalmOps home, unused) and returning an exit code (0 on success, 2 on a bad argument).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, type=Path, help="output directory")
    common.add_argument("--blocks", type=int, default=10, help="number of blocks (clinic: visits)")
    common.add_argument("--rows-per-block", type=int, default=1000, help="rows per block (clinic: patients)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--format", choices=FORMAT_CHOICES, default="csv")
    common.add_argument("--block-col", default="block", help="name of the block column")
    common.add_argument("--inject", help="JSON list (inline or file) of DriftInjector steps to apply")

    generate = subparsers.add_parser("generate", help="write generated block files and ground_truth.json")
    kinds = generate.add_subparsers(dest="generate_kind", required=True)

    syn = kinds.add_parser("synthetic", parents=[common], help="river stream with optional concept drift")
    syn.add_argument("--generator", choices=GENERATOR_CHOICES, default="sea")
    syn.add_argument("--settings", help="JSON settings of the first concept, e.g. '{\"variant\": 0}'")
    syn.add_argument("--drift-to", help="JSON settings of the concept drifted to")
    syn.add_argument("--drift-block", type=int, help="first block of the new concept")
    syn.add_argument("--drift-width", type=int, default=1, help="transition width in rows (1 = abrupt)")
    syn.add_argument("--target", default="target")
    syn.set_defaults(func=_handler(_run_synthetic))

    real = kinds.add_parser("real", parents=[common], help="synthesize rows like a real table")
    real.add_argument("--input", required=True, type=Path, help="real table (.csv or .parquet)")
    real.add_argument("--method", choices=METHOD_CHOICES, default="cart")
    real.add_argument("--target", help="label column whose class balance is kept")
    real.add_argument("--sdv-model", choices=SDV_MODEL_CHOICES, default="gaussian_copula")
    real.add_argument("--sdv-epochs", type=int, default=300)
    real.add_argument("--test-size", type=float, default=0.3, help="share held out for the fidelity report")
    real.set_defaults(func=_handler(_run_real))

    clinic = kinds.add_parser("clinic", parents=[common], help="longitudinal clinical cohort (block = visit)")
    clinic.add_argument("--genes", type=int, default=50)
    clinic.add_argument("--proteins", type=int, default=10)
    clinic.add_argument("--modules", type=int, default=5)
    clinic.add_argument("--modality", choices=MODALITY_CHOICES, default="rnaseq")
    clinic.add_argument(
        "--transition",
        action="append",
        default=[],
        metavar="VISIT:FRACTION",
        help="controls turning into disease from VISIT (repeatable)",
    )
    clinic.add_argument(
        "--module-shift",
        action="append",
        default=[],
        metavar="VISIT:MODULE:FOLD",
        help="module mean multiplied by FOLD from VISIT (repeatable)",
    )
    clinic.set_defaults(func=_handler(_run_clinic))

    inject = kinds.add_parser(
        "inject",
        parents=[common],
        help="inject drift into an existing table (blocks kept if --block-col exists)",
    )
    inject.add_argument("--input", required=True, type=Path, help="table (.csv or .parquet)")
    inject.add_argument(
        "--spec", dest="inject", required=True, help="JSON list (inline or file) of injections"
    )
    inject.set_defaults(func=_handler(_run_inject))
