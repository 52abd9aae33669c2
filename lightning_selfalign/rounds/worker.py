"""The between-rounds worker: :func:`round_worker` evaluates the round that just trained and builds the next
round's data, in its own process started by the :class:`~lightning_selfalign.callbacks.SelfAlignRounds` callback
as ``python -m lightning_selfalign.rounds`` (:func:`main`); :func:`exit_with_parent` ends it when the trainer dies.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lightning_selfalign.errors import UserError
from lightning_selfalign.rounds.data_round import run_data_round
from lightning_selfalign.rounds.evaluation import finish_round, generator_for, write_round_report
from lightning_selfalign.rounds.settings import load_settings
from lightning_selfalign.rounds.state import RoundState


def round_worker(workdir: str, round: int, model_dir: str, shard: str = "0/1") -> None:
    """Between rounds, in its own process: evaluate round ROUND's exported model and build round ROUND+1's data.

    Args:
        workdir: the self-align run's folder (holds settings.json and state.json).
        round: the round whose training just ended.
        model_dir: that round's exported Hugging Face folder.
        shard: i/n; given explicitly so the launcher's RANK/WORLD_SIZE, inherited from the trainer, are not used.
    """
    from lightning_selfalign.stages import parse_shard

    path, settings = Path(workdir), load_settings(Path(workdir))
    part = parse_shard(shard)
    assert RoundState(path).reached(round, "exported"), f"round {round} must be exported before it is evaluated"
    finish_round(round, path, settings)
    write_round_report(path)
    if round + 1 < settings.rounds:
        run_data_round(round + 1, generator_for(RoundState(path), round + 1, settings.model), path, settings, part)


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
    """``python -m lightning_selfalign.rounds --workdir W --round R --model_dir M --shard 0/1``."""
    from jsonargparse import CLI

    exit_with_parent()
    try:
        # As a package, argv[0] is __main__.py: name the real invocation in --help instead.
        CLI(round_worker, args=argv, as_positional=False, prog="python -m lightning_selfalign.rounds")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
