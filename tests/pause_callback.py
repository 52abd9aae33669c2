"""Callbacks the tests load by class path in subprocesses (``PYTHONPATH=tests``): a pause for the kill-and-resume
test (at a given step it writes a marker file and waits to be killed), a stop, and a per-rank record of what each
epoch trains on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning.pytorch as pl


class PauseAt(pl.Callback):
    """After optimizer step ``step`` completes, touch ``marker`` and sleep (the test sends SIGKILL)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text("paused", encoding="utf-8")
            time.sleep(600)


class StopAt(pl.Callback):
    """Stop training once optimizer step ``step`` has completed (an interrupted run, without killing the test)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class RecordTrainFiles(pl.Callback):
    """At each training epoch's start, append ``{"epoch", "train_files"}`` to ``folder/rank-<global rank>.jsonl``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        row = {"epoch": trainer.current_epoch, "train_files": trainer.datamodule.train_files}
        with (self.folder / f"rank-{trainer.global_rank}.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
