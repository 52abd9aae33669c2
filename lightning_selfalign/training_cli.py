"""``selfalign fit`` / ``selfalign validate``: LightningCLI over SelfAlignLM and InstructionDataModule.

Configs compose (``--config a.yaml --config b.yaml --trainer.max_steps 10``); the resolved config is saved
beside the logs of every run. The tokenizer of the data always follows the model (``model.model_name_or_path``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_selfalign.cli import argument_error_line
from lightning_selfalign.datamodule import InstructionDataModule
from lightning_selfalign.errors import UserError
from lightning_selfalign.model import SelfAlignLM


class SelfAlignCLI(LightningCLI):
    """LightningCLI with the data's tokenizer linked to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")

    def before_fit(self) -> None:
        self._resolve_last("fit")

    def before_validate(self) -> None:
        self._resolve_last("validate")

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


def latest_last_checkpoint(trainer: Trainer) -> Path | None:
    """The newest ``last*.ckpt`` under the trainer's root folder or any ModelCheckpoint's folder."""
    folders = {Path(trainer.default_root_dir)}
    folders.update(Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None))
    found = [path for folder in folders if folder.exists() for path in folder.rglob("last*.ckpt")]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


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
            parser_kwargs={"prog": "selfalign", "exit_on_error": False},
        )
    except ArgumentError as exc:
        raise UserError(argument_error_line(exc, args[0] if args else "fit")) from None
