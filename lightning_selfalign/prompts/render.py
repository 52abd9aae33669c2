"""Rendering the three stages' prompts: completion text for base models, chat messages for instruct models.

Every few-shot block has the same shape in both modes: a *query* (what the stage is given) and an *answer* (what
the model must write); :mod:`~lightning_selfalign.prompts.formats` lays them out. Completion mode writes the
blocks one after another and ends with the new item's query and answer header, so the model continues with the
answer and the format's stop string closes it. Chat mode turns each block into a user turn (query) and an
assistant turn (answer) after a system turn with the same task description.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from lightning_selfalign.jsonl import fingerprint
from lightning_selfalign.prompts.fewshot import Example, load_examples
from lightning_selfalign.prompts.formats import DEFAULT_FORMAT, STAGES, Parts, PromptFormat, get_format

# Bump when a layout changes, so rows made with the old layout get a different fingerprint.
TEMPLATE_VERSION = 2
# Few-shot examples per prompt, by stage: StarCoder2-Instruct's 8 / 8 / 1 (its README's commands).
DEFAULT_NUM_FEWSHOT = {"concepts": 8, "instructions": 8, "responses": 1}
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


def num_fewshot_for(stage: str, num_fewshot: int | None) -> int:
    """``num_fewshot``, or the stage's published count when it is None."""
    return DEFAULT_NUM_FEWSHOT[stage] if num_fewshot is None else num_fewshot


def render_query(stage: str, item: dict | Example, layout: PromptFormat) -> str:
    """What the stage is given, in the format's layout (without the answer header)."""
    get = item.get if isinstance(item, dict) else lambda key: getattr(item, key)
    return layout.render_query(stage, get)


def render_answer(stage: str, example: Example, layout: PromptFormat) -> str:
    """What the model must write for ``example`` at ``stage``."""
    if stage == "concepts":
        return layout.render_concepts(example.concepts)
    if stage == "instructions":
        return example.instruction
    return layout.render_response(Parts(example.reasoning, example.code, example.explanation, example.tests))


def choose_examples(
    stage: str, row: dict, rng: random.Random, num_fewshot: int, pool: Sequence[Example], layout: PromptFormat
) -> list[Example]:
    """Pick ``num_fewshot`` examples with ``rng``. The published formats sample the pool uniformly (the
    reference's ``random.sample``); selfalign-v1 puts the row's category first for instructions and responses."""
    if layout.name != "selfalign-v1":
        return rng.sample(list(pool), min(max(0, num_fewshot), len(pool)))
    category = row.get("category") if stage != "concepts" else None
    matching = [example for example in pool if example.category == category]
    others = [example for example in pool if example.category != category]
    rng.shuffle(matching)
    rng.shuffle(others)
    chosen = (matching + others)[: max(0, num_fewshot)]
    rng.shuffle(chosen)
    return chosen


def _completion_text(stage: str, row: dict, examples: Sequence[Example], layout: PromptFormat) -> str:
    queries = [render_query(stage, example, layout) for example in examples]
    answers = [render_answer(stage, example, layout) for example in examples]
    return layout.completion_text(stage, queries, answers, render_query(stage, row, layout))


def _chat_messages(stage: str, row: dict, examples: Sequence[Example], layout: PromptFormat) -> list[dict]:
    messages = [{"role": "system", "content": layout.system[stage]}]
    for example in examples:
        messages.append({"role": "user", "content": render_query(stage, example, layout)})
        messages.append({"role": "assistant", "content": render_answer(stage, example, layout)})
    messages.append({"role": "user", "content": render_query(stage, row, layout)})
    return messages


@functools.lru_cache(maxsize=64)
def prompt_fingerprint(
    stage: str, *, chat: bool = False, num_fewshot: int | None = None, prompt_format: str = DEFAULT_FORMAT
) -> str:
    """Digest of the stage's layout and the whole few-shot pool it samples from.

    The pool, not the per-row pick, is hashed: the pick follows from the row's rng, so one stage run
    with one configuration has one fingerprint.
    """
    layout = get_format(prompt_format)
    content = {
        "stage": stage,
        "template_version": TEMPLATE_VERSION,
        "system": layout.system[stage],
        "answer_tag": layout.answer_header[stage],
        "chat": chat,
        "num_fewshot": num_fewshot_for(stage, num_fewshot),
        "examples": [
            [render_query(stage, example, layout), render_answer(stage, example, layout), example.category]
            for example in load_examples()
        ],
    }
    if layout.name != "selfalign-v1":  # v1's digest predates the formats and stays as it was
        content["format"] = layout.name
    return fingerprint(content)


def _check_row(stage: str, row: dict) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    absent = [field for field in QUERY_FIELDS[stage] if not row.get(field)]
    if absent:
        raise ValueError(f"row {row.get('id', '?')!r}: the {stage} stage needs field(s) {', '.join(absent)}")


def build_prompt(
    stage: str,
    row: dict,
    *,
    rng: random.Random,
    chat: bool = False,
    num_fewshot: int | None = None,
    prompt_format: str = DEFAULT_FORMAT,
) -> Prompt:
    """The prompt for one row at one stage, with few-shot examples chosen by ``rng`` (deterministic).

    concepts reads ``seed``; instructions reads ``concepts``, ``category``, ``difficulty``; responses reads
    ``instruction`` (and ``category`` when present, for selfalign-v1's choice of examples). ``num_fewshot=None``
    takes the stage's published count (8 / 8 / 1).
    """
    _check_row(stage, row)
    layout = get_format(prompt_format)
    count = num_fewshot_for(stage, num_fewshot)
    examples = choose_examples(stage, row, rng, count, load_examples(), layout)
    digest = prompt_fingerprint(stage, chat=chat, num_fewshot=count, prompt_format=prompt_format)
    stop = layout.stop(stage)
    if chat:
        return Prompt(text=None, messages=_chat_messages(stage, row, examples, layout), stop=stop, fingerprint=digest)
    return Prompt(text=_completion_text(stage, row, examples, layout), messages=None, stop=stop, fingerprint=digest)
