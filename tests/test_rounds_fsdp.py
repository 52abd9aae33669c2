"""Rounds under FSDP: the round export gathers every rank's shard and rank 0 writes a folder that transformers loads
with the trained module's logits; the between-rounds handoff moves FSDP's flat parameters, really lets go of them,
and training goes on exactly as without it; a rollback loads full weights back into the shards. Strategies the rounds
cannot serve are refused at setup.

The FSDP run is real: Lightning's ``FSDPStrategy`` with 2 CPU processes on gloo, this file run as the script
Lightning launches once per rank. Lightning refuses ``FSDPStrategy`` itself without a GPU, and hands torch's FSDP no
device on CPU (which torch then refuses); :class:`CPUFSDPStrategy` only adds that device. DeepSpeed is not installed
here: its ZeRO-3 gather is not run by any test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

REPO = Path(__file__).resolve().parents[1]
IDS = torch.arange(3, 3 + 2 * 24).reshape(2, 24) * 37 % 4000  # a fixed batch both sides compare logits on


class CPUFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` on CPU processes: torch's FSDP runs there when given the device."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = FullyShardedDataParallel(
            model, device_id=torch.device("cpu"), sharding_strategy=self.sharding_strategy,
            cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config, **self.kwargs,
        )  # fmt: skip
        return super()._setup_model(wrapped)  # already wrapped: Lightning only finishes the setup


class FSDPRound(pl.Callback):
    """Epoch 0's end: with a disk handoff, a round trip checked from inside; then the callback's own ``close_round``
    (its worker a no-op) and the module's logits. Epoch 1's end: the logits, then a rollback to the base model and the
    logits again. Rank 0 records every step's loss."""

    def __init__(self, out: Path, base_model: str, handoff: str) -> None:
        self.out, self.base_model, self.handoff, self.losses = out, base_model, handoff, []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, index) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_selfalign.callbacks import close_round, load_weights

        rank = trainer.global_rank
        if trainer.current_epoch == 0:
            if self.handoff == "disk":
                (self.out / f"rank-{rank}.json").write_text(json.dumps(self.check_handoff(trainer)))
            close_round(trainer, pl_module, self.out / "run", 0, "true", (self.handoff, self.out / f"h-{rank}.pt"))
            self.save_logits(trainer, "exported")
            return
        self.save_logits(trainer, "final")
        load_weights(pl_module, self.base_model)
        self.save_logits(trainer, "rolled-back")
        if trainer.is_global_zero:
            (self.out / "losses.json").write_text(json.dumps(self.losses))

    def check_handoff(self, trainer: pl.Trainer) -> dict:
        from lightning_selfalign.handoff import fsdp_flat_parameters, hand_off, training_slots

        root, optimizers = trainer.strategy.model, trainer.optimizers
        flat, own = fsdp_flat_parameters(root), list(root.parameters())
        before = [slot.get().clone() for slot in training_slots(root, optimizers)]
        moved = hand_off(root, optimizers, "disk", self.out / f"check-{trainer.global_rank}.pt")
        released = all(p.numel() == 0 and p.grad is None for p in [*flat, *own])
        released &= all(p._local_shard.numel() == 0 for p in flat)
        moved.restore()
        after = [slot.get() for slot in training_slots(root, optimizers)]
        return {
            "flat_parameters": len(flat), "elements": sum(p.numel() for p in flat), "released": released,
            "identical": len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after)),
            "kinds": sorted({slot.kind for slot in moved.slots}),
            "shard_is_data": all(p._local_shard.data_ptr() == p.data_ptr() for p in flat),
        }  # fmt: skip

    def save_logits(self, trainer: pl.Trainer, name: str) -> None:
        batch = {"input_ids": IDS, "attention_mask": torch.ones_like(IDS)}
        with torch.no_grad():
            logits = trainer.strategy.model(batch)  # the FSDP root: every rank takes part
        if trainer.is_global_zero:
            torch.save(logits, self.out / f"{name}.pt")


def fsdp_run(out: Path, model_dir: str, handoff: str) -> None:
    """What each rank runs: two epochs of two steps under FSDP, with :class:`FSDPRound`."""
    from transformers.models.starcoder2.modeling_starcoder2 import Starcoder2DecoderLayer

    from lightning_selfalign.datamodule import InstructionDataModule
    from lightning_selfalign.model import SelfAlignLM

    pl.seed_everything(0)
    strategy = CPUFSDPStrategy(auto_wrap_policy={Starcoder2DecoderLayer}, process_group_backend="gloo")
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=2, limit_train_batches=2, limit_val_batches=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=str(out), callbacks=[FSDPRound(out, model_dir, handoff)],
    )  # fmt: skip
    data = InstructionDataModule(str(out.parent / "train.jsonl"), tokenizer=model_dir, max_length=64,
                                 cache_dir=str(out.parent / "cache"))  # fmt: skip
    trainer.fit(SelfAlignLM(model_dir, learning_rate=1e-3), datamodule=data)


def launch(out: Path, model_dir: Path, handoff: str) -> Path:
    out.mkdir()
    command = [sys.executable, __file__, f"--out={out}", f"--model={model_dir}", f"--handoff={handoff}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=150,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return out


@pytest.mark.timeout(300)
def test_fsdp_round_exports_what_the_sharded_module_computes(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from lightning_selfalign.rounds import RoundPaths, RoundState

    rows = [{"instruction": f"Write f{i}.", "response": f"def f{i}(x):\n    return x * {i}\n"} for i in range(16)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = launch(tmp_path / "disk", tiny_model_dir, "disk")

    state, folder = RoundState(run / "run"), RoundPaths(run / "run", 0).model
    assert state.round(0)["model_dir"] == str(folder), "rank 0 wrote and recorded the export"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits, base_logits = exported(IDS).logits, base(IDS).logits
    module_logits = torch.load(run / "exported.pt")
    assert torch.allclose(logits, module_logits, rtol=0, atol=1e-5), (logits - module_logits).abs().max()
    assert not torch.allclose(logits, base_logits, atol=1e-3), "two steps of training changed the weights"
    rolled_back = torch.load(run / "rolled-back.pt")
    assert torch.allclose(rolled_back, base_logits, rtol=0, atol=1e-5), "the rollback loaded the base into the shards"

    for rank in range(2):
        facts = json.loads((run / f"rank-{rank}.json").read_text())
        assert facts["flat_parameters"] == 5, f"rank {rank}: the root's flat parameter and one per decoder layer"
        assert facts["elements"] < 0.6 * base.num_parameters(), f"rank {rank} holds a shard, not the model"
        assert facts["released"], f"rank {rank}: parameters, flat parameters and FSDP's own shard reference all left"
        assert facts["identical"] and facts["shard_is_data"], f"rank {rank}: the round trip is bit-identical"
        assert facts["kinds"] == ["data", "grad", "state"], f"rank {rank}: gradients and optimizer state moved too"

    plain = launch(tmp_path / "none", tiny_model_dir, "none")
    assert json.loads((run / "losses.json").read_text()) == json.loads((plain / "losses.json").read_text())
    assert torch.equal(torch.load(run / "final.pt"), torch.load(plain / "final.pt")), "training went on the same"


def test_an_unsharded_module_exports_the_plain_models_keys(tiny_model_dir):
    from lightning_selfalign.export import full_model_state, load_full_model_state
    from lightning_selfalign.model import SelfAlignLM

    module = SelfAlignLM(str(tiny_model_dir))
    module.configure_model()
    state = full_model_state(module)
    plain = module.model.state_dict()
    assert state.keys() == plain.keys() and all(state[k].data_ptr() == plain[k].data_ptr() for k in plain)
    assert load_full_model_state(module, {k: v.clone() for k, v in state.items()}) == ([], [])


def fake_trainer(strategy: object) -> SimpleNamespace:
    datamodule = SimpleNamespace(set_train_files=lambda files: None)
    return SimpleNamespace(reload_dataloaders_every_n_epochs=1, strategy=strategy, datamodule=datamodule)


@pytest.mark.parametrize(
    ("strategy", "handoff", "refusal"),
    [
        (FSDPStrategy(), "cpu", None),
        (FSDPStrategy(use_orig_params=False), "disk", None),
        (DeepSpeedStrategy.__new__(DeepSpeedStrategy), "none", None),  # DeepSpeedStrategy() needs deepspeed
        (DeepSpeedStrategy.__new__(DeepSpeedStrategy), "cpu", "DeepSpeed owns the parameters' storage"),
        (ModelParallelStrategy(), "none", "cannot gather its DTensor shards"),
    ],
)
def test_rounds_accept_fsdp_and_deepspeed_and_refuse_what_cannot_work(strategy, handoff, refusal):
    from lightning_selfalign.callbacks import check_trainer
    from lightning_selfalign.errors import UserError

    if refusal is None:
        check_trainer(fake_trainer(strategy), 1, handoff)
    else:
        with pytest.raises(UserError, match=refusal):
            check_trainer(fake_trainer(strategy), 1, handoff)


if __name__ == "__main__":  # one rank of the FSDP run; Lightning starts the other rank with the same arguments
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--handoff", choices=["none", "disk"], required=True)
    arguments = parser.parse_args()
    fsdp_run(arguments.out, arguments.model, arguments.handoff)
