"""Curated rows are valid training input: the DataModule loads them and a real Trainer takes one step."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
from helpers import executed, write_rows

from lightning_selfalign.curation import curate_command


@pytest.mark.timeout(300)
def test_curated_rows_train_one_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    from lightning_selfalign.datamodule import InstructionDataModule
    from lightning_selfalign.model import SelfAlignLM

    rows = [executed(parent, i, verdict="pass" if i else "fail") for parent in ("p1", "p2", "p3") for i in range(3)]
    source = write_rows(tmp_path / "executed.jsonl", rows)
    output = tmp_path / "sft.jsonl"
    curate_command(str(source), str(output), drop_tests=True, progress=False)
    assert len(output.read_text(encoding="utf-8").splitlines()) == 3

    data = InstructionDataModule(
        str(output), tokenizer=str(tiny_model_dir), max_length=256, batch_size=1, cache_dir=str(tmp_path / "cache")
    )
    model = SelfAlignLM(str(tiny_model_dir))
    trainer = pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 1
    assert trainer.callback_metrics and all(bool(value.isfinite()) for value in trainer.callback_metrics.values())
    assert json.loads(output.read_text(encoding="utf-8").splitlines()[0])["response"]
