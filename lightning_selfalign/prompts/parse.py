"""Parsing model output back into row fields, or a named reason to drop the row.

Engines differ in whether they strip the stop string from the text (vLLM does, transformers'
``stop_strings`` does not), so parsing first cuts at the first stop marker itself.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from lightning_selfalign.prompts.render import STAGES, STOP

MAX_CONCEPTS = 12
MAX_CONCEPT_CHARS = 120
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
_TAG_LINE = re.compile(r"^\s*\[[a-z]+\]\s*$")


@dataclass(frozen=True)
class Parsed:
    """Fields to add to the row, or ``fields=None`` and why the row is dropped."""

    fields: dict | None
    drop_reason: str | None


def _drop(reason: str) -> Parsed:
    return Parsed(fields=None, drop_reason=reason)


def cut_at_stop(text: str, stop: list[str] = STOP) -> str:
    """The text before the first stop marker (if the engine left it in)."""
    cut = len(text)
    for marker in stop:
        index = text.find(marker)
        if index >= 0:
            cut = min(cut, index)
    return text[:cut]


def parse_concepts(text: str) -> Parsed:
    """One concept per line (bullets optional); a single comma-separated line also works."""
    lines = [line for line in text.splitlines() if line.strip() and not _TAG_LINE.match(line)]
    if len(lines) == 1 and "," in lines[0] and not _BULLET.match(lines[0]):
        lines = lines[0].split(",")
    concepts: list[str] = []
    for line in lines:
        concept = _BULLET.sub("", line).strip().rstrip(".;,").strip()
        if concept and len(concept) <= MAX_CONCEPT_CHARS and concept not in concepts:
            concepts.append(concept)
    if not concepts:
        return _drop("no_concepts")
    return Parsed(fields={"concepts": concepts[:MAX_CONCEPTS]}, drop_reason=None)


def parse_instruction(text: str) -> Parsed:
    """The instruction is the whole answer, stripped."""
    instruction = text.strip()
    if not instruction:
        return _drop("empty_instruction")
    return Parsed(fields={"instruction": instruction}, drop_reason=None)


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def _has_assert(source: str) -> bool:
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(source)))


def parse_response(text: str) -> Parsed:
    """Reasoning, then the solution block, then the tests block: the last fenced block is the tests and
    the block right before it is the solution (earlier blocks are illustrations in the reasoning)."""
    response = text.strip()
    if not response:
        return _drop("empty_response")
    blocks = [block.strip("\n") for block in _FENCE.findall(response)]
    if not blocks:
        return _drop("no_code_block")
    if len(blocks) < 2:
        return _drop("no_tests")
    code, tests = blocks[-2], blocks[-1]
    if not code.strip():
        return _drop("no_code_block")
    if not _parses(code):
        return _drop("unparseable_code")
    if not _parses(tests):
        return _drop("unparseable_tests")
    if not _has_assert(tests):
        return _drop("no_asserts")
    return Parsed(fields={"response": response, "code": code, "tests": tests}, drop_reason=None)


_PARSERS = {"concepts": parse_concepts, "instructions": parse_instruction, "responses": parse_response}


def parse_output(stage: str, text: str) -> Parsed:
    """Turn one generated answer into the stage's fields, or name why it is dropped.

    concepts -> ``{"concepts": [...]}``; instructions -> ``{"instruction": str}``;
    responses -> ``{"response": str, "code": str, "tests": str}``. Drop reasons: ``no_concepts``,
    ``empty_instruction``, ``empty_response``, ``no_code_block``, ``no_tests``, ``unparseable_code``,
    ``unparseable_tests``, ``no_asserts``.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return _PARSERS[stage](cut_at_stop(text))
