"""``calmops generate`` through generators.cli, and the block writer's files and ground truth."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from calmops_dagster.generators.cli import (
    FORMAT_CHOICES,
    GENERATOR_CHOICES,
    METHOD_CHOICES,
    MODALITY_CHOICES,
    SDV_MODEL_CHOICES,
    add_generate_command,
)
from calmops_dagster.generators.clinic import MODALITIES
from calmops_dagster.generators.errors import GeneratorConfigError, UnknownOptionError
from calmops_dagster.generators.real import METHODS, SDV_MODELS
from calmops_dagster.generators.synthetic import GENERATORS
from calmops_dagster.generators.writer import (
    FORMATS,
    GROUND_TRUTH_FILE,
    assign_blocks,
    read_table,
    write_blocks,
)


def run(argv, home=None):
    parser = argparse.ArgumentParser(prog="calmops")
    add_generate_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["generate", *argv])
    return args.func(args) if home is None else args.func(args, home)


def load(out):
    truth = json.loads((out / GROUND_TRUTH_FILE).read_text())
    files = [out / name for name in truth["files"].values()]
    frame = pd.concat([read_table(f) for f in files], ignore_index=True)
    return frame, truth


def test_synthetic_with_concept_drift_and_injection_writes_blocks_and_truth(tmp_path):
    out = tmp_path / "syn"
    spec = [
        {"method": "feature_drift", "columns": ["x2"], "kind": "shift", "magnitude": 1.0, "blocks": [4, 5]}
    ]

    def synthetic(out_dir):
        return run(["synthetic", "--generator", "sea", "--drift-to", '{"variant": 3}', "--drift-block", "3",
                    "--out", str(out_dir), "--blocks", "6", "--rows-per-block", "300", "--seed", "1",
                    "--inject", json.dumps(spec)])

    assert synthetic(out) == 0
    frame, truth = load(out)
    assert sorted(p.name for p in out.iterdir()) == [f"block_00{i}.csv" for i in range(6)] + [
        GROUND_TRUTH_FILE
    ]
    assert truth["n_blocks"] == 6 and truth["n_rows"] == 1800 and truth["block_rows"]["3"] == [900, 1200]
    assert [d["type"] for d in truth["drifts"]] == ["concept_drift", "feature_drift"]
    assert truth["drifts"][0]["position"] == 900
    # the ground truth is exactly where KS sees drift: x2 in blocks 4 and 5, nothing else
    drifted = {
        (c, b)
        for d in truth["drifts"]
        if d["type"] == "feature_drift"
        for c in d["columns"]
        for b in d["blocks"]
    }
    for col in ["x0", "x1", "x2"]:
        for block in range(1, 6):
            p = stats.ks_2samp(frame.loc[frame.block == 0, col], frame.loc[frame.block == block, col]).pvalue
            assert (p < 1e-4) if (col, block) in drifted else (p > 0.01), (col, block, p)
    # the concept drift shows in the labels: SEA variant 3 labels fewer rows positive
    assert frame.loc[frame.block >= 3, "target"].mean() < frame.loc[frame.block < 3, "target"].mean() - 0.05
    # same seed, same bytes
    again = tmp_path / "again"
    assert synthetic(again) == 0
    assert (out / "block_004.csv").read_bytes() == (again / "block_004.csv").read_bytes()


def test_real_prints_fidelity_and_keeps_balance(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    real = pd.DataFrame(
        {
            "a": x[:, 0],
            "b": x[:, 0] + x[:, 1],
            "g": np.where(x[:, 2] > 0, "p", "q"),
            "y": (x[:, 0] > 0.5).astype(int),
        }
    )
    src = tmp_path / "real.parquet"
    real.to_parquet(src)
    out = tmp_path / "real_out"
    assert (
        run(
            [
                "real",
                "--input",
                str(src),
                "--method",
                "cart",
                "--target",
                "y",
                "--out",
                str(out),
                "--blocks",
                "2",
                "--rows-per-block",
                "250",
                "--format",
                "parquet",
            ],
            home=object(),
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "train-on-synthetic" in printed and "correlation matrix distance" in printed
    frame, truth = load(out)
    assert len(frame) == 500 and set(frame.columns) == {"a", "b", "g", "y", "block"}
    assert frame["y"].mean() == pytest.approx(real["y"].mean(), abs=0.003)
    assert truth["source"]["method"] == "cart" and "utility" in truth["source"]["fidelity"]


def test_clinic_blocks_are_visits(tmp_path):
    out = tmp_path / "clinic"
    assert (
        run(
            [
                "clinic",
                "--genes",
                "6",
                "--proteins",
                "2",
                "--modules",
                "2",
                "--transition",
                "2:0.5",
                "--module-shift",
                "3:1:2.5",
                "--out",
                str(out),
                "--blocks",
                "4",
                "--rows-per-block",
                "50",
            ]
        )
        == 0
    )
    frame, truth = load(out)
    assert (frame["block"] == frame["visit"]).all() and frame.groupby("block").size().tolist() == [50] * 4
    assert [d["type"] for d in truth["drifts"]] == ["group_transition", "module_shift"]
    genes = frame.filter(like="gene_")
    assert (genes >= 0).all().all() and (genes == genes.round()).all().all()


def test_inject_on_an_existing_table_keeps_its_blocks(tmp_path):
    table = pd.DataFrame(
        {
            "v": np.random.default_rng(1).normal(size=400),
            "y": [0, 1] * 200,
            "batch": np.repeat([10, 20, 30, 40], 100),
        }
    )
    src = tmp_path / "t.csv"
    table.to_csv(src, index=False)
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            [
                {"method": "label_flip", "target": "y", "fraction": 1.0, "blocks": [30]},
                {"method": "missing_drift", "columns": ["v"], "rate": 0.5, "blocks": [40]},
            ]
        )
    )
    out = tmp_path / "inj"
    assert (
        run(["inject", "--input", str(src), "--spec", str(spec), "--block-col", "batch", "--out", str(out)])
        == 0
    )
    frame, truth = load(out)
    assert truth["files"] == {
        "10": "block_000.csv",
        "20": "block_001.csv",
        "30": "block_002.csv",
        "40": "block_003.csv",
    }
    assert (
        frame.loc[frame.batch == 30, "y"].to_numpy() == 1 - table.loc[table.batch == 30, "y"].to_numpy()
    ).all()
    assert (
        frame.loc[frame.batch != 40, "v"].notna().all()
        and frame.loc[frame.batch == 40, "v"].isna().mean() > 0.3
    )
    assert [d["blocks"] for d in truth["drifts"]] == [[30], [40]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synthetic", "--drift-to", '{"variant": 1}', "--blocks", "3"], "--drift-block"),
        (["synthetic", "--settings", "{not json"], "not valid JSON"),
        (["inject", "--input", "missing.csv", "--spec", "[]"], "missing.csv"),
        (["clinic", "--transition", "2"], "--transition expects 2 values"),
        (["synthetic", "--inject", '[{"method": "shrink"}]'], "unknown injection 'shrink'; valid options"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, argv, message):
    assert run([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_unknown_subcommand_and_method_are_rejected_by_argparse(tmp_path):
    with pytest.raises(SystemExit):
        run(["weather", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        run(["real", "--input", "x.csv", "--method", "gan", "--out", str(tmp_path)])


def test_writer_helpers(tmp_path):
    frame = assign_blocks(pd.DataFrame({"a": range(7)}), 3)
    assert frame["block"].tolist() == [0, 0, 0, 1, 1, 1, 2]
    paths = write_blocks(frame, tmp_path, fmt="parquet", ground_truth=[{"type": "x", "value": np.int64(3)}])
    assert [p.name for p in paths] == ["block_000.parquet", "block_001.parquet", "block_002.parquet"]
    assert json.loads((tmp_path / GROUND_TRUTH_FILE).read_text())["drifts"] == [{"type": "x", "value": 3}]
    with pytest.raises(UnknownOptionError, match="valid options: csv, parquet"):
        write_blocks(frame, tmp_path, fmt="xlsx")
    with pytest.raises(GeneratorConfigError, match="block column"):
        write_blocks(frame, tmp_path, block_col="nope")
    with pytest.raises(GeneratorConfigError, match="rows_per_block"):
        assign_blocks(frame, 0)
    with pytest.raises(GeneratorConfigError, match=".csv or .parquet"):
        read_table(tmp_path / "a.xlsx")


def test_cli_option_names_match_the_modules():
    assert GENERATOR_CHOICES == tuple(sorted(GENERATORS))
    assert MODALITY_CHOICES == tuple(sorted(MODALITIES))
    assert (METHOD_CHOICES, SDV_MODEL_CHOICES) == (METHODS, SDV_MODELS)
    assert FORMAT_CHOICES == FORMATS
