"""``selfalign fit`` / ``selfalign validate``: LightningCLI over SelfAlignLM and InstructionDataModule.

Configs compose (``--config a.yaml --config b.yaml --trainer.max_steps 10``); the resolved config is saved
beside the logs of every run. The tokenizer of the data always follows the model (``model.model_name_or_path``).
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_selfalign.cli import argument_error_line
from lightning_selfalign.datamodule import InstructionDataModule
from lightning_selfalign.errors import UserError
from lightning_selfalign.model import SelfAlignLM


class SelfAlignCLI(LightningCLI):
    """LightningCLI with the data's tokenizer linked to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters while it parses: check the file before that.
        if self.config.get("subcommand"):
            check_checkpoint_path(self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        given = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        chosen = any(isinstance(callback, ProgressBar) for callback in (given if isinstance(given, list) else [given]))
        trainer = super().instantiate_trainer(**kwargs)  # (it extends the config's callback list in place)
        bar = trainer.progress_bar_callback
        if type(bar) is RichProgressBar and not chosen:
            trainer.callbacks[trainer.callbacks.index(bar)] = LearningRateBar()  # Lightning's default bar, replaced
        return trainer

    def before_fit(self) -> None:
        self._resolve_last("fit")
        clamp_validation_interval(self.trainer, self.datamodule)

    def before_validate(self) -> None:
        self._resolve_last("validate")

    def after_fit(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.interrupted:
            print(where_fit_saved(self.trainer), flush=True)

    def _resolve_last(self, subcommand: str) -> None:
        # Lightning looks for "last" only in this run's checkpoint folder, and every run gets a new
        # lightning_logs/version_N: without this, `--ckpt_path last` after a kill silently starts over.
        arguments = self.config_init[subcommand]
        if arguments.get("ckpt_path") != "last":
            return
        found = latest_last_checkpoint(self.trainer)
        if found is None:
            rank_zero_info(f"--ckpt_path last: no last.ckpt under {self.trainer.default_root_dir}; starting fresh")
            arguments["ckpt_path"] = None
        else:
            rank_zero_info(f"--ckpt_path last: resuming from {found}")
            arguments["ckpt_path"] = str(found)


class LearningRateBar(RichProgressBar):
    """Lightning's default progress bar, with learning rates in scientific notation (its three decimals show a
    1e-5 learning rate as 0.000)."""

    def get_metrics(self, trainer: Trainer, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        return {key: f"{value:.2e}" if key.endswith("lr") and isinstance(value, float) else value
                for key, value in metrics.items()}  # fmt: skip


def latest_last_checkpoint(trainer: Trainer) -> Path | None:
    """The newest ``last*.ckpt`` under the trainer's root folder or any ModelCheckpoint's folder."""
    folders = {Path(trainer.default_root_dir)}
    folders.update(Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None))
    found = [path for folder in folders if folder.exists() for path in folder.rglob("last*.ckpt")]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


# A logger or plugin whose package is missing: where to get it.
EXTRA_HINTS = {
    "tensorboard": "; pip install 'lightning-selfalign[tensorboard]'",
    "wandb": "; pip install wandb",
    "mlflow": "; pip install mlflow",
}


def class_problem_line(exc: Exception) -> str | None:
    """One line for a class LightningCLI could not build because a package is missing (a logger's, usually), else
    None. jsonargparse reports it inside a ValueError listing each union member it tried."""
    text = str(exc)
    found = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", text)
    if found:
        name, problem = found[1], found[2].strip()
    elif isinstance(exc, ModuleNotFoundError):
        name, problem = "", text.splitlines()[0] if text else repr(exc)
    else:
        return None
    if not re.search(r"is available|not available|No module named|not met", text):
        return None
    hint = next((hint for key, hint in EXTRA_HINTS.items() if key in problem), "")
    return f"{name}: {problem}{hint}" if name else f"{problem}{hint}"


def check_checkpoint_path(ckpt_path: str | None) -> None:
    """One clear error for a checkpoint file that is missing or is not a PyTorch checkpoint (a zip archive), before
    any model is built; Lightning's own names (``last``, ``best``, ``hpc``, ``registry``) pass through."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc") or ckpt_path.startswith("registry"):
        return
    path = Path(ckpt_path)
    if path.is_dir():
        return  # a sharded (FSDP / DeepSpeed) checkpoint folder: the strategy reads it
    if not path.is_file():
        raise UserError(f"--ckpt_path {ckpt_path}: no such file (or `last` for the newest last.ckpt)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"--ckpt_path {ckpt_path}: not a PyTorch checkpoint (truncated or another kind of file)")


def clamp_validation_interval(trainer: Trainer, datamodule: Any) -> None:
    """An integer ``val_check_interval`` larger than an epoch's batches becomes the epoch's length, with a warning,
    instead of Lightning's error: a config written for a large data set still trains on a small one. One process
    only (with several, each would load the data here at once; Lightning's own check then applies)."""
    interval = trainer.val_check_interval
    count = getattr(datamodule, "train_batches", None)
    if not isinstance(interval, int) or count is None or trainer.world_size != 1:
        return
    batches = count()
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    if 0 < batches < interval:
        rank_zero_warn(f"--trainer.val_check_interval {interval} is more than the {batches} training batches of an "
                       f"epoch: validating every {batches} batches instead")  # fmt: skip
        trainer.val_check_interval = batches


def where_fit_saved(trainer: Trainer) -> str:
    """The line a finished fit ends with: best and last checkpoints and the log folder."""
    callback = trainer.checkpoint_callback
    parts = []
    if callback is not None and getattr(callback, "best_model_path", ""):
        parts.append(f"best checkpoint {callback.best_model_path}")
    if callback is not None and getattr(callback, "last_model_path", ""):
        parts.append(f"last checkpoint {callback.last_model_path}")
    if not parts:
        parts.append("no checkpoint saved (checkpointing is off)")
    if trainer.logger is not None and trainer.log_dir:
        parts.append(f"logs {trainer.log_dir}")
    return "fit done: " + "; ".join(parts)


def run_lightning_cli(args: Sequence[str]) -> SelfAlignCLI:
    """Run ``fit`` or ``validate`` with a ``selfalign``-style argument list."""
    from jsonargparse import ArgumentError

    # LightningCLI warns when args are given while sys.argv also has some; `selfalign` passes sys.argv on purpose.
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
    try:
        return SelfAlignCLI(
            SelfAlignLM,
            InstructionDataModule,
            args=list(args),
            save_config_kwargs={"overwrite": True},
            # The module's own --model.optimizer / --model.learning_rate set the optimizer: no second --optimizer.
            auto_configure_optimizers=False,
            parser_kwargs={"prog": "selfalign", "exit_on_error": False},
        )
    except (ModuleNotFoundError, ValueError) as exc:  # e.g. --trainer.logger TensorBoardLogger without tensorboard
        line = class_problem_line(exc)
        if line is None:
            raise
        raise UserError(line) from None
    except ArgumentError as exc:
        line = argument_error_line(exc, args[0] if args else "fit")
        if "--optimizer" in line or "--lr_scheduler" in line:
            line += "; the optimizer and schedule are --model.optimizer, --model.learning_rate, --model.lr_schedule"
        raise UserError(line) from None
