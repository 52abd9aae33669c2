"""Epoch plans: which examples go in which row, which rows in which batch, on which rank, in which order.

A plan is a few numpy arrays (no Python object per example), computed from example lengths alone and a
seed, so every rank computes the same global plan and takes its own share, and a resumed run recomputes
exactly the order it was interrupted in.

- Rows are made once per loaded data set: one example per row, or examples packed best-fit decreasing
  into rows of at most ``max_length`` tokens (an example never spans rows). Keeping rows fixed keeps the
  number of batches the same every epoch, which Lightning's epoch length and the LR schedule rely on.
- Each epoch orders the rows: seeded random order, or length-grouped (HF's ``LengthGroupedSampler``
  scheme: random mega-batches of 50 batches, sorted by length inside) to cut padding, or as is.
- Batches are consecutive groups of ``batch_size`` rows; rank ``r`` takes every ``world_size``-th.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

import numpy as np

MEGABATCH_BATCHES = 50


def best_fit_decreasing(ids: np.ndarray, lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Pack examples ``ids`` (lengths ``lengths[ids]``, each <= capacity) into as few rows as practical.

    Longest first, each into the row whose free space fits it most tightly: O(n log capacity).
    """
    order = ids[np.argsort(-lengths[ids], kind="stable")].tolist()
    size_of = lengths.tolist()
    rows: list[list[int]] = []
    rows_by_space: dict[int, list[int]] = {}
    spaces: list[int] = []  # distinct free spaces that some row has, sorted
    for example in order:
        size = size_of[example]
        k = bisect_left(spaces, size)
        if k == len(spaces):
            row, space = len(rows), capacity
            rows.append([])
        else:
            space = spaces[k]
            stack = rows_by_space[space]
            row = stack.pop()
            if not stack:
                del rows_by_space[space]
                spaces.pop(k)
        rows[row].append(example)
        space -= size
        if space > 0:
            if space not in rows_by_space:
                rows_by_space[space] = []
                insort(spaces, space)
            rows_by_space[space].append(row)
    return rows


def length_grouped(ids: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Random order, then each mega-batch of ``50 * batch_size`` sorted longest first."""
    shuffled = rng.permutation(ids)
    size = MEGABATCH_BATCHES * batch_size
    groups = [shuffled[i : i + size] for i in range(0, len(shuffled), size)]
    return np.concatenate([g[np.argsort(-lengths[g], kind="stable")] for g in groups]) if groups else shuffled


@dataclass
class Rows:
    """Examples grouped into rows, fixed for the life of the loaded data (so every epoch has the same length).

    Row ``r`` holds examples ``examples[offsets[r]:offsets[r + 1]]``; ``tokens[r]`` is its length.
    """

    examples: np.ndarray
    offsets: np.ndarray
    tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def make_rows(ids: np.ndarray, lengths: np.ndarray, *, packing: bool, max_length: int, seed: int) -> Rows:
    """One row per example, or examples packed into rows of at most ``max_length`` tokens."""
    ids = np.asarray(ids, dtype=np.int64)
    if not packing:
        return Rows(ids, np.arange(len(ids) + 1, dtype=np.int64), lengths[ids].astype(np.int64))
    # A seeded shuffle before the stable sort decides which equal-length examples share a row.
    rows = best_fit_decreasing(np.random.default_rng([seed, 1 << 20]).permutation(ids), lengths, max_length)
    counts = np.array([len(row) for row in rows], dtype=np.int64)
    examples = np.fromiter((e for row in rows for e in row), dtype=np.int64, count=int(counts.sum()))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    tokens = np.add.reduceat(lengths[examples], offsets[:-1]).astype(np.int64) if len(rows) else counts
    return Rows(examples, offsets, tokens)


@dataclass
class EpochPlan:
    """One rank's batches for one epoch: global batch ``g`` is rows ``row_order[g * batch_size:][:batch_size]``."""

    rows: Rows
    row_order: np.ndarray
    batch_size: int
    batches: np.ndarray  # the global batch index of each of this rank's batches, in order
    window_tokens: np.ndarray  # label tokens in the accumulation window of each of this rank's batches

    def __len__(self) -> int:
        return len(self.batches)

    def rows_of(self, position: int) -> tuple[tuple[int, ...], ...]:
        """Example ids, row by row, of this rank's batch number ``position``."""
        start = int(self.batches[position]) * self.batch_size
        offsets = self.rows.offsets
        return tuple(
            tuple(self.rows.examples[offsets[r] : offsets[r + 1]].tolist())
            for r in self.row_order[start : start + self.batch_size]
        )


def plan_epoch(
    rows: Rows,
    num_labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    group_by_length: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    accumulate: int = 1,
) -> EpochPlan:
    """The batches rank ``rank`` of ``world_size`` sees in ``epoch``, with their accumulation-window token counts."""
    rng = np.random.default_rng([seed, epoch])
    all_rows = np.arange(len(rows), dtype=np.int64)
    if not shuffle:
        row_order = all_rows
    elif group_by_length:
        row_order = length_grouped(all_rows, rows.tokens, batch_size, rng)
    else:
        row_order = rng.permutation(all_rows)
    num_global = -(-len(rows) // batch_size)
    batches = shard_batches(num_global, rank, world_size)
    labels_per_row = np.add.reduceat(num_labels[rows.examples], rows.offsets[:-1]) if len(rows) else all_rows
    labels_per_batch = np.add.reduceat(labels_per_row[row_order], np.arange(0, len(rows), batch_size))
    window = np.zeros(0)
    if len(rows):
        # The window spans every rank's micro-batches: DDP/FSDP average gradients over ranks, so each rank
        # divides its token-loss sum by (global label tokens of the window) / world_size, and the averaged
        # gradient is the per-token mean over the whole global window, as Trainer's num_items_in_batch.
        every_rank = np.stack([shard_batches(num_global, r, world_size) for r in range(world_size)])
        global_labels = labels_per_batch[every_rank].sum(axis=0).astype(np.float64)
        window = window_sums(global_labels, accumulate) / world_size
    return EpochPlan(rows, row_order, batch_size, batches, window)


def shard_batches(num_batches: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s global batch indices: every ``world_size``-th, the tail wrapped round so all ranks get
    the same count (as ``DistributedSampler`` pads), or no batches at all when there are none."""
    if num_batches == 0:
        return np.zeros(0, dtype=np.int64)
    per_rank = -(-num_batches // world_size)
    return (rank + world_size * np.arange(per_rank)) % num_batches


def window_sums(per_batch: np.ndarray, accumulate: int) -> np.ndarray:
    """For each batch, the sum over its window of ``accumulate`` consecutive batches (the last may be partial)."""
    window_ids = np.arange(len(per_batch)) // max(accumulate, 1)
    totals = np.bincount(window_ids, weights=per_batch) if len(per_batch) else np.zeros(0)
    return totals[window_ids]


def computed_tokens(plan: EpochPlan) -> tuple[int, int]:
    """(real tokens, computed tokens) over the plan's global batches, each padded to its longest row."""
    tokens = plan.rows.tokens[plan.row_order]
    starts = np.arange(0, len(tokens), plan.batch_size)
    if not len(starts):
        return 0, 0
    longest = np.maximum.reduceat(tokens, starts)
    rows_in_batch = np.diff(np.append(starts, len(tokens)))
    return int(tokens.sum()), int((longest * rows_in_batch).sum())
