"""``selfalign fit`` / ``selfalign validate``: LightningCLI over SelfAlignLM and InstructionDataModule.

Configs compose (``--config a.yaml --config b.yaml --trainer.max_steps 10``); the resolved config is saved
beside the logs of every run. The tokenizer of the data always follows the model (``model.model_name_or_path``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_selfalign.datamodule import InstructionDataModule
from lightning_selfalign.model import SelfAlignLM


class SelfAlignCLI(LightningCLI):
    """LightningCLI with the data's tokenizer linked to the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")


def trainer_defaults() -> dict:
    """Defaults every run gets unless the config overrides them: keep the last checkpoint for resume."""
    return {
        "callbacks": [ModelCheckpoint(save_last=True, save_top_k=0)],
        "use_distributed_sampler": False,
    }


def run_lightning_cli(args: Sequence[str]) -> SelfAlignCLI:
    """Run ``fit`` or ``validate`` with a ``selfalign``-style argument list."""
    return SelfAlignCLI(
        SelfAlignLM,
        InstructionDataModule,
        args=list(args),
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "selfalign"},
    )
