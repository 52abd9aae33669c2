"""Packing is exact: a packed batch gives the same losses as its examples run one at a time, and no token
attends across an example boundary. Plus the planner's arithmetic (best fit, windows, shards)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_selfalign.data import packing
from lightning_selfalign.data.loading import IGNORE_INDEX, BatchSpec, PlannedBatches
from lightning_selfalign.model import packed_attention_mask


def _examples(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Random token ids with a response part labelled (prompt first, never the first token)."""
    rng = np.random.default_rng(seed)
    ids, masks = [], []
    for _ in range(n):
        length = int(rng.integers(5, 40))
        prompt = int(rng.integers(1, length - 1))
        ids.append(rng.integers(1, 4000, length).tolist())
        masks.append([0] * prompt + [1] * (length - prompt))
    return ids, masks


class _Examples:
    """The two columns PlannedBatches reads, as a stand-in for the memory-mapped datasets.Dataset."""

    def __init__(self, ids: list[list[int]], masks: list[list[int]]) -> None:
        self.columns = {"input_ids": ids, "label_mask": masks}

    def select_columns(self, names: list[str]) -> _Examples:
        return self

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def __getitem__(self, indices: list[int]) -> dict[str, list[list[int]]]:
        return {name: [column[i] for i in indices] for name, column in self.columns.items()}


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager", dtype=torch.float32).eval()


def _token_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    kwargs = {"input_ids": batch["input_ids"]}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
        kwargs["attention_mask"] = packed_attention_mask(batch["position_ids"], torch.float32)
    else:
        kwargs["attention_mask"] = batch["attention_mask"]
    with torch.no_grad():
        logits = model(**kwargs).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_packed_loss_equals_examples_one_at_a_time(tiny_model):
    ids, masks = _examples(9)
    rows = ((0, 1, 2), (3, 4), (5, 6, 7, 8))
    packed = PlannedBatches(_Examples(ids, masks), packing=True, pad_id=0)[BatchSpec(rows, 0.0)]
    assert "attention_mask" not in packed and packed["position_ids"].shape == packed["input_ids"].shape
    packed_sum = _token_losses(tiny_model, packed)
    packed_tokens = int((packed["labels"][:, 1:] != IGNORE_INDEX).sum())

    single = PlannedBatches(_Examples(ids, masks), packing=False, pad_id=0)
    sums, tokens = 0.0, 0
    for i in range(len(ids)):
        alone = single[BatchSpec(((i,),), 0.0)]
        sums += float(_token_losses(tiny_model, alone))
        tokens += int((alone["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert packed_tokens == tokens == sum(sum(m[1:]) for m in masks)
    assert float(packed_sum) / packed_tokens == pytest.approx(sums / tokens, abs=1e-5)


@pytest.mark.timeout(120)
def test_no_attention_across_example_boundaries(tiny_model):
    ids, masks = _examples(3, seed=1)
    batch = PlannedBatches(_Examples(ids, masks), packing=True, pad_id=0)[BatchSpec(((0, 1, 2),), 0.0)]
    perturbed_ids = [list(x) for x in ids]
    perturbed_ids[1] = [(t * 7 + 3) % 4000 + 1 for t in perturbed_ids[1]]
    perturbed = PlannedBatches(_Examples(perturbed_ids, masks), packing=True, pad_id=0)[BatchSpec(((0, 1, 2),), 0.0)]

    def logits(b):
        with torch.no_grad():
            mask = packed_attention_mask(b["position_ids"], torch.float32)
            return tiny_model(input_ids=b["input_ids"], position_ids=b["position_ids"], attention_mask=mask).logits[0]

    before, after = logits(batch), logits(perturbed)
    first, second = len(ids[0]), len(ids[0]) + len(ids[1])
    assert torch.equal(before[:first], after[:first])  # example 0 precedes the change
    assert torch.allclose(before[second:], after[second:], atol=1e-6)  # example 2 follows it but cannot see it
    assert not torch.allclose(before[first:second], after[first:second])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("attn", ["eager", "sdpa", "flex_attention"])
def test_every_attention_kernel_keeps_packed_examples_apart(tiny_model, tiny_model_dir, attn):
    """SelfAlignLM's forward on a packed row equals each example run alone, whichever kernel computes it
    (eager/sdpa read our dense mask, flex_attention a block mask transformers builds from the position ids)."""
    from lightning_selfalign.model import SelfAlignLM

    ids, masks = _examples(4, seed=2)
    packed = PlannedBatches(_Examples(ids, masks), packing=True, pad_id=0)[BatchSpec(((0, 1, 2, 3),), 0.0)]
    module = SelfAlignLM(model_name_or_path=str(tiny_model_dir), attn_implementation=attn)
    module.configure_model()
    module.eval()
    with torch.no_grad():
        logits = module(packed)[0]
    start = 0
    for example in ids:
        with torch.no_grad():
            alone = tiny_model(input_ids=torch.tensor([example])).logits[0]
        assert torch.allclose(logits[start : start + len(example)], alone, atol=1e-4), attn
        start += len(example)


def test_packed_batch_layout():
    ids, masks = [[5, 6, 7], [8, 9]], [[0, 1, 1], [0, 1]]
    batch = PlannedBatches(_Examples(ids, masks), packing=True, pad_id=0)[BatchSpec(((0, 1), (1,)), 12.0)]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [8, 9, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 9, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert float(batch["window_tokens"]) == 12.0 and batch["window_tokens"].dtype == torch.float32
    assert int(batch["num_examples"]) == 3 and int(batch["num_real_tokens"]) == 7
    padded = PlannedBatches(_Examples(ids, masks), packing=False, pad_id=0)[BatchSpec(((0,), (1,)), 3.0)]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert padded["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert "position_ids" not in padded


def test_best_fit_decreasing_fills_rows():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 1100, 3000)
    rows = packing.best_fit_decreasing(np.arange(len(lengths)), lengths, 1280)
    assert sorted(e for row in rows for e in row) == list(range(len(lengths)))
    assert all(lengths[row].sum() <= 1280 for row in rows)
    assert lengths.sum() / (1280 * len(rows)) > 0.95


def test_window_sums_and_shards():
    assert packing.window_sums(np.array([1.0, 2, 3, 4, 5]), 2).tolist() == [3, 3, 7, 7, 5]
    assert packing.window_sums(np.array([1.0, 2]), 1).tolist() == [1, 2]
    shards = [packing.shard_batches(7, rank, 3).tolist() for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]


def test_plan_windows_count_label_tokens_of_each_window():
    lengths = np.array([10, 20, 30, 40, 50, 60, 70])
    num_labels = np.array([1, 2, 3, 4, 5, 6, 7])
    rows = packing.make_rows(np.arange(7), lengths, packing=False, max_length=100, seed=0)
    plan = packing.plan_epoch(rows, num_labels, batch_size=2, shuffle=True, group_by_length=False, seed=3,
                              epoch=0, accumulate=3)  # fmt: skip
    per_batch = [sum(num_labels[e] for row in plan.rows_of(i) for e in row) for i in range(len(plan))]
    assert len(plan) == 4
    assert plan.window_tokens.tolist() == [sum(per_batch[:3])] * 3 + [per_batch[3]]


def test_window_tokens_are_global_over_ranks_divided_by_world_size():
    """Under DDP every rank must divide by the same global count (Trainer's average_tokens_across_devices)."""
    lengths = np.array([10, 20, 30, 40])
    num_labels = np.array([5, 1, 9, 2])
    rows = packing.make_rows(np.arange(4), lengths, packing=False, max_length=100, seed=0)
    plans = [packing.plan_epoch(rows, num_labels, batch_size=1, shuffle=False, group_by_length=False, seed=0,
                                epoch=0, rank=rank, world_size=2, accumulate=2) for rank in range(2)]  # fmt: skip
    assert plans[0].window_tokens.tolist() == plans[1].window_tokens.tolist() == [17 / 2, 17 / 2]
    local = [sum(num_labels[e] for i in range(len(p)) for row in p.rows_of(i) for e in row) for p in plans]
    assert sum(local) == 17
