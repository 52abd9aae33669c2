"""The DataModule inside a real Lightning Trainer: the loader position travels in checkpoints (a fit resumed
mid-epoch sees exactly the remaining batches) and ``reload_dataloaders_every_n_epochs`` picks up new files."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_selfalign.data import InstructionDataModule


class BatchRecorder(pl.LightningModule):
    """A one-parameter model that records what each training step saw."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, int, int, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, int(batch["input_ids"].sum()), float(batch["window_tokens"])))
        return self.weight * batch["window_tokens"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _write(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"instruction": f"task {i} " * (1 + i % 4), "response": f"return {i}\n" * (1 + i % 6)}
            for i in range(offset, offset + n)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _trainer(root: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kwargs,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_fit_resumed_from_mid_epoch_checkpoint_continues_with_the_next_batch(tiny_model_dir, tmp_path):
    data = str(_write(tmp_path / "train.jsonl", 30))

    def datamodule() -> InstructionDataModule:
        return InstructionDataModule(data, tokenizer=str(tiny_model_dir), cache_dir=str(tmp_path / "cache"),
                                     batch_size=2, max_length=96)  # fmt: skip

    full = BatchRecorder()
    _trainer(tmp_path / "full", max_epochs=2, accumulate_grad_batches=2).fit(full, datamodule=datamodule())

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    first = BatchRecorder()
    _trainer(tmp_path / "a", max_steps=11, accumulate_grad_batches=2, callbacks=[checkpoint]).fit(
        first, datamodule=datamodule()
    )
    assert first.seen == full.seen[: len(first.seen)]
    epoch0 = len([s for s in full.seen if s[0] == 0])
    assert epoch0 == 15  # 8 optimizer steps, the last over a partial window
    # Step 4: mid epoch 0, after 8 micro-batches. Step 10: mid epoch 1, after 4 of its micro-batches.
    for name, done in (("epoch=0-step=4.ckpt", 8), ("epoch=1-step=10.ckpt", epoch0 + 4)):
        resumed = BatchRecorder()
        _trainer(tmp_path / "b", max_epochs=2, accumulate_grad_batches=2).fit(
            resumed, datamodule=datamodule(), ckpt_path=str(tmp_path / "ckpt" / name)
        )
        assert resumed.seen == full.seen[done:], name


class SwitchFiles(pl.Callback):
    """Points the DataModule at a new file at the end of epoch 0, as the round callback will."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            trainer.datamodule.set_train_files(self.path)


@pytest.mark.timeout(300)
def test_reload_every_epoch_trains_on_the_new_files(tiny_model_dir, tmp_path):
    first, second = _write(tmp_path / "r0.jsonl", 8), _write(tmp_path / "r1.jsonl", 20, offset=50)
    dm = InstructionDataModule(str(first), tokenizer=str(tiny_model_dir), cache_dir=str(tmp_path / "cache"),
                               batch_size=2, packing=False)  # fmt: skip
    model = BatchRecorder()
    _trainer(tmp_path, max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[SwitchFiles(str(second))]).fit(
        model, datamodule=dm
    )
    per_epoch = [len([s for s in model.seen if s[0] == epoch]) for epoch in (0, 1)]
    assert per_epoch == [4, 10]
    assert dm.stats["train_examples"] == 20
