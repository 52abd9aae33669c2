"""The between-rounds worker: :func:`round_worker` evaluates the round that just trained and builds the next
round's data, in its own process started by the :class:`~lightning_selfalign.callbacks.SelfAlignRounds` callback
as ``python -m lightning_selfalign.rounds`` (:func:`main`); :func:`exit_with_parent` ends it when the trainer dies.
Under several ranks the callback starts it once per part (``--step``): evaluate on rank 0, generate on every rank
(its ``--shard``), curate on rank 0.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Literal

from lightning_selfalign.errors import UserError
from lightning_selfalign.rounds.data_round import finish_data_round, run_data_round, write_shard
from lightning_selfalign.rounds.evaluation import finish_round, generator_for, write_round_report
from lightning_selfalign.rounds.settings import load_settings
from lightning_selfalign.rounds.state import RoundState

Step = Literal["all", "evaluate", "generate", "curate"]


def round_worker(workdir: str, round: int, model_dir: str, shard: str = "0/1", step: Step = "all") -> None:
    """Between rounds, in its own process: evaluate round ROUND's exported model and build round ROUND+1's data.

    Args:
        workdir: the self-align run's folder (holds settings.json and state.json).
        round: the round whose training just ended.
        model_dir: that round's exported Hugging Face folder.
        shard: i/n: the shard of round ROUND+1's rows to generate and execute (step generate), or n, the shards to
            merge (step curate); given explicitly so the launcher's RANK/WORLD_SIZE, inherited from the trainer, are
            not used.
        step: all (one process: evaluate, then the whole data round), or one part of a sharded round: evaluate (and
            choose the next round's generator), generate (this shard's seeds to executed rows; needs evaluate done),
            curate (merge every shard's rows and curate; needs every shard generated).
    """
    from lightning_selfalign.stages import parse_shard

    path, settings = Path(workdir), load_settings(Path(workdir))
    index, shards = parse_shard(shard)
    if step == "all" and shards != 1:
        raise UserError(f"--shard {shard} with --step all: one process makes the whole round; pass --shard 0/1, or "
                        "run --step generate for each shard and then --step curate")  # fmt: skip
    state = RoundState(path)
    if step in ("all", "evaluate"):
        assert state.reached(round, "exported"), f"round {round} must be exported before it is evaluated"
        finish_round(round, path, settings)
        write_round_report(path)
    if step == "evaluate" or round + 1 >= settings.rounds:
        return
    if not state.reached(round, "evaluated"):
        raise UserError(f"round {round} is not evaluated yet: run --step evaluate before --step {step}")
    generator = generator_for(state, round + 1, settings.model)
    if step == "all":
        run_data_round(round + 1, generator, path, settings)
    elif step == "generate":
        write_shard(round + 1, generator, path, settings, (index, shards))
    else:
        finish_data_round(round + 1, generator, path, settings, shards)


def exit_with_parent(interval_s: float = 0.5) -> None:
    """End this worker when the trainer that started it dies (a SIGKILL leaves no chance to stop it), so a rerun
    never races an orphan writing the same round."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def main(argv: list[str] | None = None) -> None:
    """``python -m lightning_selfalign.rounds --workdir W --round R --model_dir M [--shard i/n --step S]``."""
    from jsonargparse import CLI

    exit_with_parent()
    try:
        # As a package, argv[0] is __main__.py: name the real invocation in --help instead.
        CLI(round_worker, args=argv, as_positional=False, prog="python -m lightning_selfalign.rounds")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
