"""The row contract: one typed row per stage, as it appears in the JSONL files.

Rows are plain JSON objects so that every stage passes through fields it does not know. Each stage's
row adds fields to its parent's; provenance travels with every row:

- ``id``: stable, derived from the row's defining inputs (see :func:`lightning_selfalign.jsonl.stable_id`);
- ``parent_id``: the ``id`` of the row it was made from (``None`` for seeds);
- ``round``: the self-alignment round that produced it (0 for the first);
- ``fingerprint``: digest of the prompt template + sampling settings (or limits) that produced it.

The ``REQUIRED_*`` tuples are what each consumer checks with ``read_jsonl(required=...)``.
"""

from __future__ import annotations

from typing import TypedDict


class Provenance(TypedDict, total=False):
    id: str
    parent_id: str | None
    round: int
    fingerprint: str


class SeedRow(Provenance):
    """A seed function mined from real code."""

    seed: str  # source code of the function
    source: str  # "path:line"
    lang: str  # "python"


class ConceptRow(SeedRow):
    """Programming concepts the seed exercises."""

    concepts: list[str]


class InstructionRow(ConceptRow):
    """A task written from concepts."""

    instruction: str
    category: str  # "function" | "class" | "program"
    difficulty: str  # "easy" | "medium" | "hard"


class ResponseRow(InstructionRow):
    """One sampled response with its own tests."""

    response: str  # the model text, as generated
    code: str  # the solution extracted from the response
    tests: str  # the tests extracted from the response
    sample_index: int
    finish_reason: str  # "stop" | "length"


class ExecutedRow(ResponseRow):
    """A response after the execution filter."""

    verdict: str  # "pass" or the failure kind: fail, error, timeout, memory, crash, no_tests, ...
    reason: str  # exception type and message, or the signal
    tests_run: int  # checks the harness saw complete
    duration_s: float
    limits: dict  # timeout_s, memory_mb, run_as_main it ran under; a rerun under others is refused


class SftRow(Provenance):
    """A curated training example. The DataModule also accepts ``messages`` or ``prompt`` + ``completion``."""

    instruction: str
    response: str


REQUIRED_SEED = ("id", "seed")
REQUIRED_CONCEPT = ("id", "seed", "concepts")
REQUIRED_INSTRUCTION = ("id", "instruction")
REQUIRED_RESPONSE = ("id", "instruction", "response")
REQUIRED_EXECUTE = ("id", "code", "tests")
REQUIRED_CURATE = ("id", "instruction", "response", "verdict")
VERDICT_PASS = "pass"
