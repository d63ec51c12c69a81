"""The demo pipeline: a drifting dataset, one file per block, dropped into a watched folder one at a time.

``calmops demo`` writes ``CALMOPS_HOME/demo/<name>/blocks/block_001.csv ... block_NNN.csv`` (file number =
block number), copies the first ``initial`` files into the watched folder ``demo/<name>/data/`` and saves
the spec. ``calmops demo --next`` copies the next file that is not there yet, so following the story never
skips a block. The story (what each file is) is printed by both, from :func:`story_lines`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.paths import CalmOpsHome


@dataclass(frozen=True)
class DemoFile:
    """One block file of the demo: its path in ``blocks/`` and the block it holds."""

    path: Path
    block: int


@dataclass(frozen=True)
class Demo:
    """Where a demo's files are, and where its drift starts."""

    blocks_dir: Path
    data_dir: Path
    files: list[DemoFile]
    drift_at: int

    def pending(self) -> list[DemoFile]:
        """Block files not yet in the watched folder, in block order."""
        return [f for f in self.files if not (self.data_dir / f.path.name).exists()]


def demo_dirs(home: CalmOpsHome, name: str) -> tuple[Path, Path]:
    base = home.root / "demo" / name
    return base / "blocks", base / "data"


def create_demo(home: CalmOpsHome, name: str = "demo", blocks: int = 6, rows_per_block: int = 400,
                drift_at: int = 4, initial: int = 2, seed: int = 0) -> Demo:
    """Write the dataset, copy the first ``initial`` files into the watched folder, save the spec."""
    from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
    from calmops_dagster.generators.writer import write_blocks

    blocks_dir, data_dir = demo_dirs(home, name)
    frame = make_drifting_blocks(n_blocks=blocks, rows_per_block=rows_per_block, drift_at=drift_at, seed=seed)
    write_blocks(frame, blocks_dir, block_col="block", first_number=1,
                 ground_truth=[{"type": "abrupt", "from_block": drift_at,
                                "what": "x1 shift, x2 scale, segment mix, decision boundary"}])
    data_dir.mkdir(parents=True, exist_ok=True)
    demo = load_demo(home, name)
    for file in demo.files[:initial]:
        drop(file, data_dir)
    raw = {
        "name": name, "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
        "model_spec": {"module": "sklearn.ensemble", "class": "RandomForestClassifier",
                       "params": {"n_estimators": 100, "random_state": seed}},
        "performance": {"thresholds": {"balanced_accuracy": 0.6}},
        "sensor": {"interval_seconds": 5, "settle_seconds": 2},
    }
    # the model is named, not imported: scikit-learn's import was half of `calmops demo`'s time; the run that
    # trains it imports and checks the class
    save_spec(parse_spec(raw, home.spec_path(name), import_model=False), home.spec_path(name))
    return demo


def load_demo(home: CalmOpsHome, name: str = "demo") -> Demo:
    """The demo written by :func:`create_demo` (its ``ground_truth.json`` maps blocks to files)."""
    blocks_dir, data_dir = demo_dirs(home, name)
    truth_path = blocks_dir / "ground_truth.json"
    if not truth_path.is_file():
        raise CalmOpsError(f"no demo '{name}' under {home.root} ({truth_path} is missing): run `calmops demo` first")
    truth = json.loads(truth_path.read_text())
    files = sorted((DemoFile(blocks_dir / file, int(block)) for block, file in truth["files"].items()),
                   key=lambda f: f.block)
    drift_at = next((d["from_block"] for d in truth.get("drifts", []) if "from_block" in d), None)
    return Demo(blocks_dir, data_dir, files, drift_at)


def drop(file: DemoFile, data_dir: Path) -> Path:
    """Copy ``file`` into ``data_dir`` under a hidden temporary name, then rename it: the sensor never sees
    half a file."""
    target = data_dir / file.path.name
    partial = data_dir / f".{file.path.name}.partial"
    shutil.copy2(file.path, partial)
    os.replace(partial, target)
    return target


def drop_next(demo: Demo) -> DemoFile | None:
    """Copy the first pending block file into the watched folder; ``None`` when every file is there."""
    pending = demo.pending()
    if not pending:
        return None
    drop(pending[0], demo.data_dir)
    return pending[0]


def what_block_does(demo: Demo, block: int) -> str:
    if block == demo.files[0].block:
        return "trains the first champion"
    if demo.drift_at is not None and block == demo.drift_at:
        return "abrupt drift: a challenger is trained and promoted"
    if demo.drift_at is not None and block > demo.drift_at:
        return "drifted data, like the new champion's: no drift against it, kept"
    return "same distribution, no drift: the champion is kept"


def story_lines(demo: Demo) -> list[str]:
    """Every block file in order, what it does, and whether it is already in the watched folder."""
    lines = []
    for file in demo.files:
        where = "in data/" if (demo.data_dir / file.path.name).exists() else "next" if (
            file == next(iter(demo.pending()), None)) else "waiting"
        lines.append(f"  {file.path.name}  block {file.block}  {where:8}  {what_block_does(demo, file.block)}")
    return lines
