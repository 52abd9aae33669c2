"""Instruction data for training: JSONL -> chat template -> masked, packed, resumable batches."""

from lightning_selfalign.data.module import InstructionDataModule

__all__ = ["InstructionDataModule"]
