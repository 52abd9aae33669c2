"""From an epoch plan to tensors: the batch sampler, the batch builder, and a resumable DataLoader.

The sampler yields one :class:`BatchSpec` per batch (the example ids of each row plus the accumulation
window's label-token count); the dataset turns a spec into the tensors of the batch contract; the loader
counts the batches it has handed out so that a checkpoint taken mid-epoch resumes at exactly the next one.

Batch contract (all ``torch.long`` unless noted):

- ``input_ids`` (B, T) and ``labels`` (B, T), aligned (the model shifts); labels are -100 except on
  response tokens and their EOS; the first token of an example is never a label.
- unpacked: ``attention_mask`` (B, T), 1 on real tokens, 0 on right padding.
- packed: no ``attention_mask``; ``position_ids`` (B, T) restart at 0 at every example; the padding at the
  end of a row is its own segment (positions from 0, labels -100).
- ``window_tokens``: 0-dim float, label tokens in all micro-batches of this batch's accumulation window, over
  every rank, divided by the world size (DDP averages gradients over ranks).
- ``num_examples``: 0-dim, examples (segments) in this micro-batch.
- ``num_real_tokens``: 0-dim, real (non-padding) tokens in this micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_selfalign.data.packing import EpochPlan
from lightning_selfalign.errors import UserError

IGNORE_INDEX = -100


class BatchSpec(NamedTuple):
    """What the sampler hands a loader worker: example ids row by row, and the window's label tokens."""

    rows: tuple[tuple[int, ...], ...]
    window_tokens: float


class PlannedBatchSampler(DistributedSampler):
    """Yields this rank's :class:`BatchSpec` s for the current epoch, from ``start`` on.

    It is a ``DistributedSampler`` because it already shards by rank: Lightning leaves such a sampler
    alone, so training works whatever ``use_distributed_sampler`` says. ``set_epoch`` (called by Lightning
    every epoch) picks the epoch's order.
    """

    def __init__(
        self, plan_for_epoch: Callable[[int], EpochPlan], num_batches: int, rank: int, world_size: int,
        shuffle: bool, seed: int, epoch: int = 0,
    ) -> None:  # fmt: skip
        # DistributedSampler.__init__ wants a dataset of samples and a process group; we have neither.
        self.plan_for_epoch = plan_for_epoch
        self.num_batches = num_batches
        self.num_replicas, self.rank = world_size, rank
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.drop_last = False
        self.start = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[BatchSpec]:
        plan = self.plan_for_epoch(self.epoch)
        assert len(plan) == self.num_batches, f"epoch {self.epoch} has {len(plan)} batches, not {self.num_batches}"
        for position in range(self.start, len(plan)):
            yield BatchSpec(plan.rows_of(position), float(plan.window_tokens[position]))


class PlannedBatches(Dataset):
    """Builds the tensors of one batch from a :class:`BatchSpec`, reading the memory-mapped token columns."""

    def __init__(self, examples: Any, packing: bool, pad_id: int) -> None:
        self.examples = examples.select_columns(["input_ids", "label_mask"])
        self.packing = packing
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, spec: BatchSpec) -> dict[str, torch.Tensor]:
        fetched = self.examples[[example for row in spec.rows for example in row]]
        pieces = iter(zip(fetched["input_ids"], fetched["label_mask"]))
        rows = [[next(pieces) for _ in row] for row in spec.rows]
        batch = self._packed(rows) if self.packing else self._padded([row[0] for row in rows])
        batch["window_tokens"] = torch.tensor(spec.window_tokens, dtype=torch.float32)
        batch["num_examples"] = torch.tensor(sum(len(row) for row in rows))
        return batch

    def _packed(self, rows: list[list[tuple[list[int], list[int]]]]) -> dict[str, torch.Tensor]:
        width = max(sum(len(ids) for ids, _ in row) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        position_ids = np.zeros((len(rows), width), dtype=np.int64)
        real = 0
        for r, row in enumerate(rows):
            at = 0
            for ids, mask in row:
                end = at + len(ids)
                input_ids[r, at:end] = ids
                labels[r, at:end] = np.where(np.asarray(mask, dtype=bool), ids, IGNORE_INDEX)
                position_ids[r, at:end] = np.arange(len(ids))
                at = end
            position_ids[r, at:] = np.arange(width - at)
            real += at
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(position_ids),
            "num_real_tokens": torch.tensor(real),
        }

    def _padded(self, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in examples)
        input_ids = np.full((len(examples), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)
        attention_mask = np.zeros((len(examples), width), dtype=np.int64)
        for r, (ids, mask) in enumerate(examples):
            input_ids[r, : len(ids)] = ids
            labels[r, : len(ids)] = np.where(np.asarray(mask, dtype=bool), ids, IGNORE_INDEX)
            attention_mask[r, : len(ids)] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(attention_mask),
            "num_real_tokens": torch.tensor(int(attention_mask.sum())),
        }


def _keep(batch: Any) -> Any:
    return batch


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`PlannedBatchSampler` whose ``state_dict`` Lightning saves in checkpoints.

    The state is the epoch and the number of batches handed to the training loop so far; restoring it makes
    the next iteration start at the following batch of the same epoch order (nothing replayed or skipped;
    the skipped batches are never loaded). ``data`` fingerprints the data and settings so a checkpoint is not
    silently resumed onto different batches.
    """

    def __init__(self, dataset: PlannedBatches, sampler: PlannedBatchSampler, data: str, num_workers: int = 0,
                 pin_memory: bool = False) -> None:  # fmt: skip
        super().__init__(
            dataset, batch_size=None, sampler=sampler, num_workers=num_workers, collate_fn=_keep,
            pin_memory=pin_memory, persistent_workers=False,
        )  # fmt: skip
        self.data = data
        self.batches_done = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:  # type: ignore[override]
        return self._iterate()

    def _iterate(self) -> Iterator[dict[str, torch.Tensor]]:
        # A generator: nothing below runs until the first batch is asked for, so an iterator Lightning
        # creates and throws away does not consume a pending resume position.
        self.sampler.start, self._resume_at = self._resume_at, 0
        self.batches_done = self.sampler.start
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done, "num_batches": len(self),
                "data": self.data}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("data") != self.data or state.get("num_batches") != len(self):
            raise UserError(
                "the checkpoint's training data position does not fit the current data: it was saved over"
                f" {state.get('num_batches')} batches per epoch (data {state.get('data')}), now there are"
                f" {len(self)} (data {self.data}); resume with the same --data.* settings and files, or start"
                " a fresh fit without --ckpt_path"
            )
        self.sampler.set_epoch(int(state["epoch"]))
        done = int(state["batches_done"])
        self._resume_at = done if done < len(self) else 0
