"""Rendering the three stages' prompts: completion text for base models, chat messages for instruct models.

Every few-shot block has the same shape in both modes: a *query* (what the stage is given) and an
*answer* (what the model must write). Completion mode lays the blocks out one after another,

    ### Example 1
    <query>
    [concepts]            <- the stage's answer tag
    <answer>
    [/example]

and ends with the new item's query and answer tag, so the model continues with the answer and the
``[/example]`` stop string closes it. Chat mode turns each block into a user turn (query) and an assistant
turn (answer) after a system turn with the same task description.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from lightning_selfalign.jsonl import fingerprint
from lightning_selfalign.prompts.fewshot import Example, load_examples

STAGES = ("concepts", "instructions", "responses")
# Not "[end]": `x[first:last] = [end]` is ordinary Python. "[/" cannot start valid Python outside a string.
END = "[/example]"
BLOCK_HEADER = "### Example"
STOP = [END, f"\n{BLOCK_HEADER}"]
# Bump when the layout below changes, so rows made with the old layout get a different fingerprint.
TEMPLATE_VERSION = 2
DEFAULT_NUM_FEWSHOT = 4

SYSTEM = {
    "concepts": (
        "Read the Python function and name the programming concepts it exercises: the language features, "
        "standard-library facilities, algorithms and data structures a programmer must know to write it. "
        "Write one short concept per line, starting with '- ', most specific first."
    ),
    "instructions": (
        "Write one self-contained Python programming task that exercises the given concepts, at the given "
        "difficulty. Category 'function' asks for one or a few functions; 'class' asks for a class with its "
        "methods; 'program' asks for a complete script with an `if __name__ == \"__main__\":` block that "
        "reads no input and prints its results. State the names, signatures, inputs, outputs and edge "
        "cases precisely enough that someone could write tests for it. Do not include the solution."
    ),
    "responses": (
        "Solve the Python programming task. First explain the approach in a few sentences, then give the "
        "complete solution in one ```python block, then write 'Tests:' and one ```python block of assert "
        "statements that check the solution, including edge cases. The tests must run as they are, after "
        "the solution, with nothing else defined."
    ),
}
ANSWER_TAG = {"concepts": "[concepts]", "instructions": "[instruction]", "responses": "[response]"}
QUERY_FIELDS = {
    "concepts": ("seed",),
    "instructions": ("concepts", "category", "difficulty"),
    "responses": ("instruction",),
}


@dataclass(frozen=True)
class Prompt:
    """One rendered prompt; exactly one of ``text`` (completion) and ``messages`` (chat) is set."""

    text: str | None
    messages: list[dict] | None
    stop: list[str]
    fingerprint: str


def _bullets(concepts: Sequence[str]) -> str:
    return "\n".join(f"- {concept}" for concept in concepts)


def render_query(stage: str, item: dict | Example) -> str:
    """What the stage is given, in the block layout (without the answer tag)."""
    get = item.get if isinstance(item, dict) else lambda key: getattr(item, key)
    if stage == "concepts":
        return f"[seed]\n```python\n{get('seed').strip()}\n```"
    if stage == "instructions":
        return (
            f"[properties]\ncategory: {get('category')}\ndifficulty: {get('difficulty')}\n"
            f"concepts:\n{_bullets(get('concepts'))}"
        )
    return f"[task]\n{get('instruction').strip()}"


def render_answer(stage: str, example: Example) -> str:
    """What the model must write for ``example`` at ``stage``."""
    if stage == "concepts":
        return _bullets(example.concepts)
    if stage == "instructions":
        return example.instruction
    return example.response


def choose_examples(
    stage: str, row: dict, rng: random.Random, num_fewshot: int, pool: Sequence[Example]
) -> list[Example]:
    """Pick ``num_fewshot`` examples with ``rng``; for instructions and responses, the row's category first."""
    category = row.get("category") if stage != "concepts" else None
    matching = [example for example in pool if example.category == category]
    others = [example for example in pool if example.category != category]
    rng.shuffle(matching)
    rng.shuffle(others)
    chosen = (matching + others)[: max(0, num_fewshot)]
    rng.shuffle(chosen)
    return chosen


def _completion_text(stage: str, row: dict, examples: Sequence[Example]) -> str:
    tag = ANSWER_TAG[stage]
    blocks = [SYSTEM[stage]]
    for number, example in enumerate(examples, start=1):
        blocks.append(
            f"{BLOCK_HEADER} {number}\n{render_query(stage, example)}\n{tag}\n{render_answer(stage, example)}\n{END}"
        )
    blocks.append(f"{BLOCK_HEADER} {len(examples) + 1}\n{render_query(stage, row)}\n{tag}\n")
    return "\n\n".join(blocks)


def _chat_messages(stage: str, row: dict, examples: Sequence[Example]) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM[stage]}]
    for example in examples:
        messages.append({"role": "user", "content": render_query(stage, example)})
        messages.append({"role": "assistant", "content": render_answer(stage, example)})
    messages.append({"role": "user", "content": render_query(stage, row)})
    return messages


@functools.lru_cache(maxsize=64)
def prompt_fingerprint(stage: str, *, chat: bool = False, num_fewshot: int = DEFAULT_NUM_FEWSHOT) -> str:
    """Digest of the stage's template and the whole few-shot pool it samples from.

    The pool, not the per-row pick, is hashed: the pick follows from the row's rng, so one stage run
    with one configuration has one fingerprint.
    """
    return fingerprint(
        {
            "stage": stage,
            "template_version": TEMPLATE_VERSION,
            "system": SYSTEM[stage],
            "answer_tag": ANSWER_TAG[stage],
            "chat": chat,
            "num_fewshot": num_fewshot,
            "examples": [
                [render_query(stage, example), render_answer(stage, example), example.category]
                for example in load_examples()
            ],
        }
    )


def _check_row(stage: str, row: dict) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    absent = [field for field in QUERY_FIELDS[stage] if not row.get(field)]
    if absent:
        raise ValueError(f"row {row.get('id', '?')!r}: the {stage} stage needs field(s) {', '.join(absent)}")


def build_prompt(
    stage: str, row: dict, *, rng: random.Random, chat: bool = False, num_fewshot: int = DEFAULT_NUM_FEWSHOT
) -> Prompt:
    """The prompt for one row at one stage, with few-shot examples chosen by ``rng`` (deterministic).

    concepts reads ``seed``; instructions reads ``concepts``, ``category``, ``difficulty``; responses reads
    ``instruction`` (and ``category`` when present, to prefer matching examples).
    """
    _check_row(stage, row)
    examples = choose_examples(stage, row, rng, num_fewshot, load_examples())
    digest = prompt_fingerprint(stage, chat=chat, num_fewshot=num_fewshot)
    if chat:
        return Prompt(text=None, messages=_chat_messages(stage, row, examples), stop=list(STOP), fingerprint=digest)
    return Prompt(text=_completion_text(stage, row, examples), messages=None, stop=list(STOP), fingerprint=digest)
