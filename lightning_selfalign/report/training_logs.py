"""Training loss from Lightning's CSVLogger files (``WORKDIR/train/lightning_logs/version_*/metrics.csv``), merged
over the runs a resume leaves behind and split by round."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOSS_COLUMN = "train/loss"


@dataclass(frozen=True)
class LossPoint:
    """One logged optimizer step: its loss and the round it trained (None when that cannot be told)."""

    step: int
    loss: float
    round: int | None


def read_loss(
    train_dir: Path, round_ends: dict[int, int], epochs_per_round: Any, missing: list[str]
) -> list[LossPoint]:
    """Every logged ``train/loss`` by step; a later version's row replaces an earlier one's for the same step.
    ``round_ends``: round -> global_step at its end (state.json), used where a row has no epoch."""
    files = metrics_files(train_dir)
    if not files:
        missing.append(no_logs_note(train_dir))
        return []
    by_step: dict[int, tuple[float, float | None]] = {}
    # Oldest first: a resumed run repeats the steps the killed run logged after its checkpoint, and keeps its own.
    for path in files:
        by_step.update(read_metrics(path, missing))
    if not by_step:
        missing.append(f"training logs have no {LOSS_COLUMN} values yet")
    ends = sorted((step, r) for r, step in round_ends.items())
    per_round = epochs_per_round if isinstance(epochs_per_round, int) and epochs_per_round >= 1 else None
    return [
        LossPoint(step, loss, round_of(step, epoch, per_round, ends)) for step, (loss, epoch) in sorted(by_step.items())
    ]


def metrics_files(train_dir: Path) -> list[Path]:
    """CSVLogger files under ``train_dir``, oldest version first (version_10 after version_9)."""
    if not train_dir.is_dir():
        return []
    found = [path for path in train_dir.rglob("metrics.csv") if re.fullmatch(r"version_\d+", path.parent.name)]
    return sorted(found, key=lambda path: (str(path.parent.parent), int(path.parent.name.split("_")[1])))


def no_logs_note(train_dir: Path) -> str:
    # Lightning picks TensorBoardLogger over CSVLogger whenever tensorboard is installed: name the fix.
    if train_dir.is_dir() and next(train_dir.rglob("events.out.tfevents*"), None) is not None:
        return (
            f"no metrics.csv under {train_dir.name}/ (TensorBoard logs only): for the loss plot add "
            f"--trainer.logger=lightning.pytorch.loggers.CSVLogger --trainer.logger.save_dir={train_dir} "
            "to the run's train_args"
        )
    return f"no training logs yet ({train_dir.name}/lightning_logs/version_*/metrics.csv)"


def read_metrics(path: Path, missing: list[str]) -> dict[int, tuple[float, float | None]]:
    """step -> (loss, epoch) of one metrics.csv; rows logging other metrics (empty loss cell) are skipped."""
    rows: dict[int, tuple[float, float | None]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                step, loss = cell(row.get("step")), cell(row.get(LOSS_COLUMN))
                if step is not None and loss is not None:
                    rows[int(step)] = (loss, cell(row.get("epoch")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        missing.append(f"{path.parent.name}/metrics.csv: read only in part ({exc})")
    return rows


def round_of(step: int, epoch: float | None, epochs_per_round: int | None, ends: list[tuple[int, int]]) -> int | None:
    """Round r trains epochs [r*E, (r+1)*E); without an epoch, the first round whose final global_step is past it."""
    if epoch is not None and epochs_per_round:
        return int(epoch) // epochs_per_round
    for end, r in ends:
        if step < end:
            return r
    return ends[-1][1] + 1 if ends else None


def cell(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
