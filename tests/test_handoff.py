"""The training-state handoff between rounds: weights, gradients, buffers and optimizer state leave (to host memory or
to a file) and come back bit-identical, the parameter objects unchanged, and training goes on with exactly the losses
of a run that never handed anything off, also inside a real Trainer with a generation engine run in between.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_selfalign.handoff import hand_off, handed_off, training_slots


def snapshot(module: torch.nn.Module, optimizers: list) -> list[tuple[str, torch.Tensor]]:
    return [(slot.kind, slot.get().detach().clone()) for slot in training_slots(module, optimizers)]


def assert_identical(before: list, after: list) -> None:
    assert [kind for kind, _ in before] == [kind for kind, _ in after]
    for (_, a), (_, b) in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and a.device == b.device
        assert torch.equal(a, b)


def train(model_dir: Path, steps: int, handoff_after: int | None, mode: str, path: Path) -> tuple[list, list]:
    """AdamW steps on the tiny model (gradients kept after each step); a handoff round trip after ``handoff_after``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = torch.randint(0, model.config.vocab_size, (steps, 2, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for step, ids in enumerate(batches):
        if step == handoff_after:
            before, parameters = snapshot(model, [optimizer]), list(model.parameters())
            moved = hand_off(model, [optimizer], mode, path)
            assert moved.bytes > 0 and moved.slots
            if mode == "disk":  # only empty placeholders stay
                assert path.exists() and all(p.numel() == 0 and p.grad is None for p in model.parameters())
            moved.restore()
            assert not path.exists()
            assert all(a is b for a, b in zip(parameters, model.parameters())), "the optimizer's parameters stay"
            assert_identical(before, snapshot(model, [optimizer]))
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, snapshot(model, [optimizer])


@pytest.mark.parametrize("mode", ["cpu", "disk"])
def test_handoff_round_trip_is_bit_identical_and_training_goes_on_the_same(tiny_model_dir, tmp_path, mode):
    plain_losses, plain_state = train(tiny_model_dir, 4, None, mode, tmp_path / "state.pt")
    losses, state = train(tiny_model_dir, 4, 2, mode, tmp_path / "state.pt")
    assert losses == plain_losses
    assert any(kind == "grad" for kind, _ in state) and any(kind == "state" for kind, _ in state)
    assert_identical(plain_state, state)


class Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


class HandOffBetweenEpochs(pl.Callback):
    """What SelfAlignRounds does between rounds: the state leaves, an engine generates, the state comes back."""

    def __init__(self, path: Path, model_dir: Path) -> None:
        self.path, self.model_dir, self.generated = path, model_dir, []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        from lightning_selfalign.engines import EngineOptions, Request, Sampling, load_engine

        before = snapshot(pl_module, trainer.optimizers)
        with handed_off(pl_module, trainer.optimizers, "disk", self.path) as moved:
            assert moved.bytes > 0 and all(p.numel() == 0 for p in pl_module.parameters())
            engine = load_engine("hf", str(self.model_dir), EngineOptions())
            request = Request(text="def add(a, b):\n", messages=None, seed=0)
            self.generated += engine.generate([request], Sampling(temperature=0.7, max_new_tokens=8))
            engine.close()
        assert_identical(before, snapshot(pl_module, trainer.optimizers))


def fit(model_dir: Path, root: Path, *callbacks: pl.Callback) -> tuple[list[float], list]:
    from lightning_selfalign.data.module import InstructionDataModule
    from lightning_selfalign.model import SelfAlignLM

    pl.seed_everything(0, verbose=False)
    module = SelfAlignLM(str(model_dir), attn_implementation="eager", learning_rate=1e-3)
    rows = [{"id": str(i), "instruction": f"Write f{i}.", "response": f"def f{i}(x):\n    return x * {i}\n"}
            for i in range(16)]  # fmt: skip
    train_file = root / "sft.jsonl"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    data = InstructionDataModule(str(train_file), tokenizer=str(model_dir), max_length=64, batch_size=2, seed=0,
                                 cache_dir=str(root / "cache"))  # fmt: skip
    losses = Losses()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=4, accumulate_grad_batches=2,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root),
                         callbacks=[losses, *callbacks])  # fmt: skip
    trainer.fit(module, datamodule=data)
    return losses.values, snapshot(module, trainer.optimizers)


@pytest.mark.timeout(300)
def test_handoff_inside_a_trainer_with_an_engine_between_epochs(tiny_model_dir, tmp_path):
    plain_losses, plain_state = fit(tiny_model_dir, tmp_path / "plain")
    between = HandOffBetweenEpochs(tmp_path / "handoff" / "rank-0.pt", tiny_model_dir)
    losses, state = fit(tiny_model_dir, tmp_path / "handoff", between)
    assert len(between.generated) == 2, "the engine ran at every epoch's end"
    assert len(losses) == 8 and losses == plain_losses
    assert_identical(plain_state, state)
