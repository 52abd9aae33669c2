"""The published prompt layouts (StarCoder2-Instruct, SelfCodeAlign): structure, few-shot counts, golden files.

The golden files under tests/golden/prompts/ are whole rendered prompts for one fixed row and rng; rewrite them
on purpose with ``SELFALIGN_WRITE_GOLDEN=1 pytest tests/test_prompt_formats.py`` and review the diff.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from lightning_selfalign.prompts import STAGES, build_prompt, get_format, parse_output

GOLDEN = Path(__file__).parent / "golden" / "prompts"
ROW = {
    "id": "r1",
    "seed": 'def add(a, b):\n    """Add two numbers."""\n    return a + b\n',
    "concepts": ["integer addition", "pure functions"],
    "category": "function",
    "difficulty": "hard",
    "instruction": "Write a function `double(x)` that returns twice `x`.",
}
PUBLISHED = ("starcoder2-instruct", "selfcodealign")


@pytest.mark.parametrize("name", PUBLISHED)
@pytest.mark.parametrize("stage", STAGES)
def test_golden_prompt(name: str, stage: str) -> None:
    text = build_prompt(stage, ROW, rng=random.Random(3407), num_fewshot=2, prompt_format=name).text
    path = GOLDEN / f"{name}.{stage}.txt"
    if os.environ.get("SELFALIGN_WRITE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", PUBLISHED)
@pytest.mark.parametrize(("stage", "shots"), [("concepts", 8), ("instructions", 8), ("responses", 1)])
def test_published_few_shot_counts_and_block_layout(name: str, stage: str, shots: int) -> None:
    prompt = build_prompt(stage, ROW, rng=random.Random(3407), prompt_format=name)
    text = prompt.text
    headers = re.findall(r"^## Example (\d+)$", text, flags=re.MULTILINE)
    assert headers == [str(n) for n in range(1, shots + 2)], "numbered from 1, the query last"
    system, _, _ = text.partition("\n\n## Example 1\n")
    assert system == get_format(name).system[stage]
    assert all(f"\n\n## Example {n}\n" in text for n in range(2, shots + 2)), "a blank line between blocks"
    assert not text.endswith("\n"), "the published prompts are stripped after the answer header"
    assert text.endswith({"concepts": "### Concepts", "instructions": {"starcoder2-instruct": "### Instruction",
                          "selfcodealign": "### Task"}[name],
                          "responses": {"starcoder2-instruct": "### Response", "selfcodealign": "<response>"}[name]
                          }[stage])  # fmt: skip
    assert prompt.stop[0] == "## Example"
    assert (name == "selfcodealign" and stage == "responses") == ("</tests>" in prompt.stop)


def test_starcoder2_property_lines_and_concepts_line() -> None:
    text = build_prompt("instructions", ROW, rng=random.Random(0), num_fewshot=0).text
    assert text.endswith(
        "## Example 1\n### Property\ncategory: code generation (function implementation)\nlanguage: Python\n"
        "concepts: integer addition, pure functions\ndifficulty: hard\n\n### Instruction"
    )
    concepts = build_prompt("concepts", ROW, rng=random.Random(0), num_fewshot=1).text
    answer = concepts.split("### Concepts\n", 1)[1].split("\n\n## Example 2", 1)[0]
    assert "\n" not in answer and ", " in answer, "concepts are one comma-separated line"


def test_selfcodealign_property_order_and_tags() -> None:
    text = build_prompt("instructions", ROW, rng=random.Random(0), num_fewshot=0, prompt_format="selfcodealign").text
    assert text.endswith(
        "### Properties\ncategory: function implementation\nlanguage: Python\ndifficulty: hard\n"
        "concepts: integer addition, pure functions\n\n### Task"
    )
    responses = build_prompt("responses", ROW, rng=random.Random(0), prompt_format="selfcodealign").text
    assert responses.endswith("## Example 2\n<instruction>\n" + ROW["instruction"] + "\n</instruction>\n\n<response>")
    assert "</response>\n\n<tests>\n" in responses and "\n</tests>\n\n## Example 2" in responses


def test_starcoder2_response_sections_in_order() -> None:
    text = build_prompt("responses", ROW, rng=random.Random(0)).text
    example = text.split("### Response\n", 1)[1].split("\n\n## Example 2", 1)[0]
    tags = re.findall(r"^\[(\w+)\]$", example, flags=re.MULTILINE)
    assert tags == ["Reasoning", "Implementation", "Explanation", "Tests"]


CODE = "def double(x):\n    return 2 * x"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_response"),
        ("[Reasoning]\nx\n\n[Implementation]\n```python\n" + CODE + "\n```", "sections"),
        (
            "[Implementation]\n```python\n" + CODE + "\n```\n[Reasoning]\nx\n[Explanation]\ny\n[Tests]\n```python\n"
            "assert double(1) == 2\n```",
            "sections",
        ),
        (
            "[Reasoning]\nx\n[Implementation]\nnone\n[Explanation]\ny\n[Tests]\n```python\nassert 1\n```",
            "no_code_block",
        ),
        ("[Reasoning]\nx\n[Implementation]\n```python\n" + CODE + "\n```\n[Explanation]\ny\n[Tests]\nnone", "no_tests"),
        (
            "[Reasoning]\nx\n[Implementation]\n```python\ndef f(:\n```\n[Explanation]\ny\n[Tests]\n```python\n"
            "assert 1\n```",
            "unparseable_code",
        ),
        (
            "[Reasoning]\nx\n[Implementation]\n```python\n" + CODE + "\n```\n[Explanation]\ny\n[Tests]\n```python\n"
            "print(double(1))\n```",
            "no_asserts",
        ),
    ],
)
def test_starcoder2_response_drop_reasons(text: str, reason: str) -> None:
    parsed = parse_output("responses", text)
    assert parsed.fields is None and parsed.drop_reason == reason


def test_starcoder2_executes_every_parsing_block_before_the_tests() -> None:
    """As the reference does: all python blocks that parse are joined; a sketch that does not parse is skipped."""
    text = (
        "\n[Reasoning]\nA helper first:\n\n```python\nTWO = 2\n```\n\nand a sketch `f(x) = ...`:\n\n```python\n"
        "def f(x) = ...\n```\n\n[Implementation]\n```python\ndef double(x):\n    return TWO * x\n```\n\n"
        "[Explanation]\nIt doubles.\n\n[Tests]\n```python\nassert double(2) == 4\n```\n\n## Example 3\n[Reasoning]"
    )
    fields = parse_output("responses", text).fields
    assert fields["code"] == "TWO = 2\ndef double(x):\n    return TWO * x"
    assert fields["tests"] == "assert double(2) == 4"
    assert fields["response"].endswith("```") and "## Example" not in fields["response"]


def test_selfcodealign_response_reads_up_to_the_tests_stop() -> None:
    text = (
        "\nIt doubles.\n\n```python\n" + CODE + "\n```\n</response>\n\n<tests>\n```python\nassert double(1) == 2\n```\n"
    )
    fields = parse_output("responses", text, "selfcodealign").fields
    assert fields["code"] == CODE and fields["tests"] == "assert double(1) == 2"
    assert parse_output("responses", "```python\n" + CODE + "\n```", "selfcodealign").drop_reason == "sections"
