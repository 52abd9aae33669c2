"""Few-shot prompts for the three generation stages, written by this project, and parsing of the output.

- :func:`build_prompt` renders one row's prompt, completion text (base models) or chat messages
  (instruct models), in one of the :mod:`~lightning_selfalign.prompts.formats` (StarCoder2-Instruct's by
  default), with few-shot examples picked by the caller's ``rng`` so a rerun reproduces;
- :func:`parse_output` turns the generated answer into the stage's fields or a drop reason;
- :func:`prompt_fingerprint` is the digest a stage stores in every row it writes.

The examples live in ``fewshot.yaml`` beside this file.
"""

from __future__ import annotations

from lightning_selfalign.prompts.fewshot import CATEGORIES, DIFFICULTIES, Example, load_examples
from lightning_selfalign.prompts.formats import DEFAULT_FORMAT, FORMATS, STAGES, Parsed, Parts, get_format
from lightning_selfalign.prompts.parse import cut_at_stop, parse_output
from lightning_selfalign.prompts.render import (
    DEFAULT_NUM_FEWSHOT,
    Prompt,
    build_prompt,
    num_fewshot_for,
    prompt_fingerprint,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_FORMAT",
    "DEFAULT_NUM_FEWSHOT",
    "DIFFICULTIES",
    "FORMATS",
    "STAGES",
    "Example",
    "Parsed",
    "Parts",
    "Prompt",
    "build_prompt",
    "cut_at_stop",
    "get_format",
    "load_examples",
    "num_fewshot_for",
    "parse_output",
    "prompt_fingerprint",
]
