"""Where the training CLI finds the DataModule; the code lives in :mod:`lightning_selfalign.data`."""

from lightning_selfalign.data import InstructionDataModule

__all__ = ["InstructionDataModule"]
