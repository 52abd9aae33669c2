"""Parsing model output back into row fields, or a named reason to drop the row.

Engines differ in whether they strip the stop string from the text (vLLM does, transformers'
``stop_strings`` does not), so parsing first cuts at the first stop marker itself.
"""

from __future__ import annotations

import re

from lightning_selfalign.prompts.formats import DEFAULT_FORMAT, STAGES, Parsed, drop, get_format

MAX_CONCEPTS = 12
MAX_CONCEPT_CHARS = 120
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
_TAG_LINE = re.compile(r"^\s*\[[a-z]+\]\s*$")


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text before the first stop marker (if the engine left it in)."""
    cut = len(text)
    for marker in stop:
        index = text.find(marker)
        if index >= 0:
            cut = min(cut, index)
    return text[:cut]


def parse_concepts(text: str) -> Parsed:
    """One comma-separated line (the published format), or one concept per line (bullets optional)."""
    lines = [line for line in text.splitlines() if line.strip() and not _TAG_LINE.match(line)]
    if len(lines) == 1 and "," in lines[0] and not _BULLET.match(lines[0]):
        lines = lines[0].split(",")
    concepts: list[str] = []
    for line in lines:
        concept = _BULLET.sub("", line).strip().rstrip(".;,").strip()
        if concept and len(concept) <= MAX_CONCEPT_CHARS and concept not in concepts:
            concepts.append(concept)
    if not concepts:
        return drop("no_concepts")
    return Parsed(fields={"concepts": concepts[:MAX_CONCEPTS]}, drop_reason=None)


def parse_instruction(text: str) -> Parsed:
    """The instruction is the whole answer, stripped."""
    instruction = text.strip()
    if not instruction:
        return drop("empty_instruction")
    return Parsed(fields={"instruction": instruction}, drop_reason=None)


def parse_output(stage: str, text: str, prompt_format: str = DEFAULT_FORMAT) -> Parsed:
    """Turn one generated answer into the stage's fields, or name why it is dropped.

    concepts -> ``{"concepts": [...]}``; instructions -> ``{"instruction": str}``;
    responses -> ``{"response": str, "code": str, "tests": str}``. Drop reasons: ``no_concepts``,
    ``empty_instruction``, ``empty_response``, ``sections`` (the format's response sections are missing or out
    of order), ``no_code_block``, ``no_tests``, ``unparseable_code``, ``unparseable_tests``, ``no_asserts``.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    layout = get_format(prompt_format)
    text = cut_at_stop(text, layout.stop(stage))
    if stage == "concepts":
        return parse_concepts(text)
    if stage == "instructions":
        return parse_instruction(text)
    return layout.parse_response(text)
