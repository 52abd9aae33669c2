"""Shared fixtures. Nothing here downloads anything: the tiny model is built from local source."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random StarCoder2 model + BPE tokenizer (trained on the local stdlib), as a Hugging Face folder."""
    from lightning_selfalign.tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-model")))
