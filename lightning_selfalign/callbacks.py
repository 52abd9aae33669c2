"""``SelfAlignRounds``: the Lightning callback that closes a round of self-alignment every ``epochs_per_round``.

At the end of a round's last epoch, on every rank: a round checkpoint (``round-<r>/trained.ckpt``, the point a
killed run resumes from); then the weights are exported (:func:`~lightning_selfalign.export.export_module`: every rank
takes part, since FSDP and DeepSpeed ZeRO-3 gather their shards to rank 0, which writes the folder); every rank
hands its training state off the accelerator (:func:`~lightning_selfalign.handoff.hand_off`, to CPU memory or disk)
while :func:`~lightning_selfalign.rounds.round_worker` runs in separate processes (evaluation, rollback
decision, the next round's data, with the GPUs' memory free for their engines): on one process, one worker does it
all; on several, rank 0's evaluates, then every rank's generates and executes its shard of the next round's rows (on
its own GPU), then rank 0's merges and curates, all ranks meeting after each part. Past the last meeting every rank
takes its state back, restores the best weights if the round was rolled back, and switches the DataModule to the
next round's data, which the Trainer loads at the next epoch (``reload_dataloaders_every_n_epochs``). At the start
of each round the lr schedule begins again (warmup, decay to 0) over that round's own optimizer steps.

The logic is in plain functions so rounds can be driven without the callback too. Strategies: one device, DDP,
FSDP (``FSDPStrategy``) and DeepSpeed; refused at setup: ``ModelParallelStrategy`` (its DTensor shards are not
gathered), and a cpu or disk handoff under DeepSpeed (see :func:`strategy_problems`).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_selfalign.errors import UserError
from lightning_selfalign.handoff import HandoffMode, handed_off
from lightning_selfalign.rounds import RoundPaths, RoundState


class SelfAlignRounds(pl.Callback):
    """Close a round (checkpoint, export, evaluate, next round's data) every ``epochs_per_round`` epochs.

    Args:
        workdir: the self-align run's folder (``settings.json``, ``state.json``, ``round-<r>/``).
        epochs_per_round: training epochs per round; the Trainer's ``reload_dataloaders_every_n_epochs`` must match.
        python: interpreter for the between-rounds worker process.
        handoff: where each rank's training state (weights, gradients, optimizer state) waits while the worker
            generates: cpu (host memory), disk (a file in ``handoff_dir``) or none (it stays on the accelerator).
        handoff_dir: folder of the disk handoff's files, one per rank (default ``WORKDIR/handoff``).
        round_timeout_h: hours ranks wait for each other between rounds (for rank 0's evaluation, the slowest shard,
            the merge); the process group's own timeout (30 minutes by default) would end a long data round.
    """

    def __init__(
        self,
        workdir: str,
        epochs_per_round: int = 1,
        python: str = sys.executable,
        handoff: HandoffMode = "cpu",
        handoff_dir: str | None = None,
        round_timeout_h: float = 72.0,
    ) -> None:
        super().__init__()
        if epochs_per_round < 1:
            raise UserError(f"epochs_per_round must be >= 1, got {epochs_per_round}")
        if handoff not in ("none", "cpu", "disk"):
            raise UserError(f"handoff must be none, cpu or disk, got {handoff!r}")
        if not 0 < round_timeout_h < math.inf:
            raise UserError(f"round_timeout_h must be a finite number of hours > 0, got {round_timeout_h}")
        self.workdir = Path(workdir)
        self.epochs_per_round = epochs_per_round
        self.python = python
        self.handoff = handoff
        self.handoff_dir = Path(handoff_dir) if handoff_dir else self.workdir / "handoff"
        self.round_timeout_h = round_timeout_h
        self._round_checkpoint = False
        self._barrier: Callable[[], None] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_trainer(trainer, self.epochs_per_round, self.handoff)
        self._barrier = round_barrier(trainer, self.round_timeout_h)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed from a round checkpoint: the checkpoint holds the round's own weights, not a rollback's.
        if trainer.current_epoch > 0:
            apply_rollback(pl_module, RoundState(self.workdir), trainer.current_epoch // self.epochs_per_round - 1)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch % self.epochs_per_round == 0:  # a round's first epoch, its data just loaded
            restart_round_schedule(trainer, self.epochs_per_round)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        round = round_ending(trainer.current_epoch, self.epochs_per_round)
        if round is None:
            return
        paths = RoundPaths(self.workdir, round)
        self._round_checkpoint = True
        try:
            trainer.save_checkpoint(paths.checkpoint)
        finally:
            self._round_checkpoint = False
        handoff = (self.handoff, self.handoff_dir / f"rank-{trainer.global_rank}.pt")
        close_round(trainer, pl_module, self.workdir, round, self.python, handoff, self._barrier)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # A round checkpoint resumes on the *next* round's data: the loader position saved for this round's data
        # does not apply there (and the DataModule rightly refuses a position for other data).
        if self._round_checkpoint and trainer.datamodule is not None:
            checkpoint.pop(type(trainer.datamodule).__qualname__, None)


def check_trainer(trainer: pl.Trainer, epochs_per_round: int, handoff: HandoffMode = "none") -> None:
    """Refuse Trainer settings under which rounds cannot work, naming the flag to change."""
    problems = []
    if trainer.reload_dataloaders_every_n_epochs != epochs_per_round:
        problems.append(
            f"--trainer.reload_dataloaders_every_n_epochs is {trainer.reload_dataloaders_every_n_epochs}; it must "
            f"equal epochs_per_round ({epochs_per_round}) so each round's data is loaded"
        )
    problems += strategy_problems(trainer.strategy, handoff)
    if trainer.datamodule is None or not hasattr(trainer.datamodule, "set_train_files"):
        problems.append("rounds need an InstructionDataModule passed to fit (it switches to each round's data)")
    if problems:
        raise UserError("; ".join(problems))


def strategy_problems(strategy: Any, handoff: HandoffMode) -> list[str]:
    """What rounds cannot do under ``strategy``: export needs its weights gathered (FSDP and DeepSpeed ZeRO-3 are,
    ModelParallelStrategy's DTensors are not), and the handoff moves tensors it can see (DeepSpeed keeps parameters
    as views into its own flat buffers, ZeRO-3 in partitions it manages)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, ModelParallelStrategy

    name = type(strategy).__name__
    if isinstance(strategy, ModelParallelStrategy):
        return [f"strategy {name}: round export cannot gather its DTensor shards yet; use FSDPStrategy (the "
                "configs/fsdp-8gpu.yaml overlay), DeepSpeedStrategy or DDP"]  # fmt: skip
    if handoff == "none":
        return []
    if isinstance(strategy, DeepSpeedStrategy):
        return [f"--handoff {handoff} under {name}: DeepSpeed owns the parameters' storage (flat buffers, ZeRO-3 "
                "partitions), which the handoff cannot move (moving the parameters would free nothing and could detach "
                "them from DeepSpeed's optimizer); use --handoff none"]  # fmt: skip
    return []


def restart_round_schedule(trainer: pl.Trainer, epochs_per_round: int) -> None:
    """Give the round now starting an lr schedule of its own (warmup, then decay to 0) over its own optimizer steps.

    The Trainer sizes the schedule once, at the start of fit, from round 0's data for every round; each round
    fine-tunes on data of another size, as the recipe's single run did on its one dataset."""
    from lightning_selfalign.optimizers import restart_schedule

    if not math.isfinite(trainer.num_training_batches):
        rank_zero_warn("the training data has no length: the lr schedule runs on across rounds")
        return
    steps = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches) * epochs_per_round
    for config in trainer.lr_scheduler_configs:
        if not restart_schedule(config.scheduler, steps):
            rank_zero_warn(f"{type(config.scheduler).__name__} is not SelfAlignLM's schedule: it runs on across rounds")


def round_barrier(trainer: pl.Trainer, hours: float) -> Callable[[], None]:
    """Where ranks meet between rounds: a barrier of its own gloo group with an ``hours`` timeout (a no-op for one
    process). The strategy's barrier would use the process group's timeout, which a data round outlasts."""
    import torch.distributed as dist

    if trainer.world_size == 1 or not dist.is_initialized():
        return lambda: trainer.strategy.barrier("selfalign-round")
    group = dist.new_group(backend="gloo", timeout=timedelta(hours=hours))  # every rank creates it, in setup
    return lambda: dist.barrier(group=group)


def round_ending(epoch: int, epochs_per_round: int) -> int | None:
    """The round whose last epoch is ``epoch`` (0-based), or None mid-round."""
    return (epoch + 1) // epochs_per_round - 1 if (epoch + 1) % epochs_per_round == 0 else None


def close_round(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    workdir: Path,
    round: int,
    python: str,
    handoff: tuple[HandoffMode, Path] = ("none", Path()),
    barrier: Callable[[], None] | None = None,
) -> None:
    """After round ``round``'s training (its checkpoint written): rank 0 records the round and writes its export
    (every rank takes part in gathering the weights); then every rank hands its training state off (``handoff``:
    mode and file) while the workers make the next round (:func:`make_next_round`); past the last ``barrier`` every
    rank takes its state back, rolls back if the worker said so, and switches to the next round's data."""
    state, paths = RoundState(workdir), RoundPaths(workdir, round)
    if trainer.is_global_zero:
        record_trained(trainer, state, round, paths)
    export_round(trainer, module, state, round, paths)
    # The strategy's module: under FSDP the root's flat parameter is on its wrapper, outside the LightningModule.
    with handed_off(trainer.strategy.model, trainer.optimizers, *handoff) as moved:
        if moved.mode != "none":
            rank_zero_info(f"round {round}: {moved.bytes / 2**30:.2f} GiB of training state per rank handed off to "
                           f"{moved.mode} in {moved.seconds:.1f} s while the next round's data is made")  # fmt: skip
        make_next_round(trainer, workdir, round, paths.model, python,
                        barrier or (lambda: trainer.strategy.barrier("selfalign-round")))  # fmt: skip
    apply_rollback(module, state, round)
    next_files = next_train_files(state, round, trainer.datamodule.train_files)
    if next_files is not None:
        trainer.datamodule.set_train_files(next_files)


def make_next_round(
    trainer: pl.Trainer, workdir: Path, round: int, model_dir: Path, python: str, barrier: Callable[[], None]
) -> None:
    """Evaluate round ``round`` and make the next round's data in worker processes. One process: one worker does
    it all. Several: rank 0's evaluates (the next round's generator depends on it); every rank's generates and
    executes its shard of the rows, seeing only its own GPU; rank 0's merges them and curates (curation compares
    rows with each other). All ranks meet after each part."""
    run = functools.partial(run_worker, workdir, round, model_dir, python)
    rank, ranks = trainer.global_rank, trainer.world_size
    if ranks == 1:
        run()
        barrier()
        return
    if rank == 0:
        run(step="evaluate")
    barrier()
    run(step="generate", shard=(rank, ranks), env=rank_device_env(trainer.strategy.root_device))
    barrier()
    if rank == 0:
        run(step="curate", shard=(0, ranks))
    barrier()


def record_trained(trainer: pl.Trainer, state: RoundState, round: int, paths: RoundPaths) -> None:
    """Record what the round trained on (the DataModule's files and counts) and where its checkpoint is."""
    datamodule = trainer.datamodule
    facts = {"checkpoint": str(paths.checkpoint), "global_step": trainer.global_step,
             "train_files": datamodule.train_files, "train_stats": dict(datamodule.stats)}  # fmt: skip
    if not state.reached(round, "trained"):
        state.record(round, "trained", **facts)
    previous = RoundPaths(paths.workdir, round - 1).checkpoint
    if round > 0 and previous.is_dir():  # DeepSpeed's and sharded FSDP's checkpoints are folders
        shutil.rmtree(previous)
    elif round > 0 and previous.exists():  # only the newest round checkpoint is needed to resume
        previous.unlink()


def export_round(
    trainer: pl.Trainer, module: pl.LightningModule, state: RoundState, round: int, paths: RoundPaths
) -> None:
    """Round ``round``'s model folder, unless a killed run already wrote it. Every rank calls this: FSDP and ZeRO-3
    gather the weights from all ranks; rank 0 decides, writes and records."""
    from lightning_selfalign.export import export_module

    if trainer.strategy.broadcast(state.reached(round, "exported") if trainer.is_global_zero else None):
        return
    if export_module(module, paths.model) is not None:
        state.record(round, "exported", model_dir=str(paths.model))


def run_worker(
    workdir: Path,
    round: int,
    model_dir: Path,
    python: str,
    step: str = "all",
    shard: tuple[int, int] = (0, 1),
    env: dict[str, str] | None = None,
) -> None:
    """``python -m lightning_selfalign.rounds`` for ``round``: a fresh process, not a fork of the trainer."""
    command = [python, "-m", "lightning_selfalign.rounds", f"--workdir={workdir}", f"--round={round}",
               f"--model_dir={model_dir}", f"--shard={shard[0]}/{shard[1]}", f"--step={step}"]  # fmt: skip
    done = subprocess.run(command, env=env or os.environ.copy(), check=False)
    if done.returncode != 0:
        raise UserError(
            f"round {round}: the between-rounds worker failed (exit {done.returncode}; its error is above); fix it "
            f"and rerun the same self-align command to resume, or run it alone: {' '.join(command)}"
        )


def rank_device_env(device: Any) -> dict[str, str]:
    """The worker's environment: on a GPU, only this rank's GPU visible, so each rank's engine loads on its own."""
    env = os.environ.copy()
    if device.type == "cuda":
        visible = [part for part in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if part]
        index = device.index or 0
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
    return env


def apply_rollback(module: pl.LightningModule, state: RoundState, round: int) -> None:
    """If round ``round`` was rolled back, load the chosen earlier model's weights into ``module``."""
    entry = state.round(round)
    if round >= 0 and entry.get("rolled_back"):
        load_weights(module, entry["next_model"])
        rank_zero_warn(f"round {round} rolled back: training continues from {entry['next_model']}")


def load_weights(module: pl.LightningModule, model_dir: str) -> None:
    """Copy a Hugging Face folder's weights into the module's model in place (same architecture; every rank calls it,
    sharded or not)."""
    from transformers import AutoModelForCausalLM

    from lightning_selfalign.export import load_full_model_state

    # module.parameters(): under FSDP the model's own may all live in the root's flat parameter
    source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=next(module.parameters()).dtype)
    missing, unexpected = load_full_model_state(module, source.state_dict())
    if unexpected or [key for key in missing if "lm_head" not in key]:
        raise UserError(f"{model_dir}: weights do not fit the trained model (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")  # fmt: skip


def next_train_files(state: RoundState, round: int, current: Any) -> str | None:
    """The next round's SFT file, or None (with a warning) when that round curated no row: keep ``current``."""
    entry = state.round(round + 1)
    if not entry:
        return None  # the last round: nothing follows
    if entry.get("counts", {}).get("curated"):
        return str(RoundPaths(state.path.parent, round + 1).sft)
    rank_zero_warn(
        f"round {round + 1} curated 0 rows (counts {entry.get('counts')}): its training continues on {current}"
    )
    return None
