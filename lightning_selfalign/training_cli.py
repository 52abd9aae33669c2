"""``selfalign fit`` / ``selfalign validate``: LightningCLI over SelfAlignLM and InstructionDataModule.

Configs compose (``--config a.yaml --config b.yaml --trainer.max_steps 10``); the resolved config is saved
beside the logs of every run. The tokenizer of the data always follows the model (``model.model_name_or_path``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_selfalign.cli import argument_error_line
from lightning_selfalign.datamodule import InstructionDataModule
from lightning_selfalign.errors import UserError
from lightning_selfalign.model import SelfAlignLM


class SelfAlignCLI(LightningCLI):
    """LightningCLI with the data's tokenizer linked to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")


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
