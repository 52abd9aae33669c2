"""Few-shot prompts for the three generation stages, written by this project, and parsing of the output.

- :func:`build_prompt` renders one row's prompt, completion text (base models) or chat messages
  (instruct models), with few-shot examples picked by the caller's ``rng`` so a rerun reproduces;
- :func:`parse_output` turns the generated answer into the stage's fields or a drop reason;
- :func:`prompt_fingerprint` is the digest a stage stores in every row it writes.

The examples live in ``fewshot.yaml`` beside this file.
"""

from __future__ import annotations

from lightning_selfalign.prompts.fewshot import CATEGORIES, DIFFICULTIES, Example, load_examples, render_response
from lightning_selfalign.prompts.parse import Parsed, cut_at_stop, parse_output
from lightning_selfalign.prompts.render import (
    DEFAULT_NUM_FEWSHOT,
    STAGES,
    STOP,
    Prompt,
    build_prompt,
    prompt_fingerprint,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_NUM_FEWSHOT",
    "DIFFICULTIES",
    "STAGES",
    "STOP",
    "Example",
    "Parsed",
    "Prompt",
    "build_prompt",
    "cut_at_stop",
    "load_examples",
    "parse_output",
    "prompt_fingerprint",
    "render_response",
]
