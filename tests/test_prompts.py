"""The few-shot examples, prompt rendering and output parsing of the generation stages."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lightning_selfalign
from lightning_selfalign.prompts import (
    CATEGORIES,
    DIFFICULTIES,
    FORMATS,
    STAGES,
    Parts,
    build_prompt,
    cut_at_stop,
    get_format,
    load_examples,
    parse_output,
    prompt_fingerprint,
)
from lightning_selfalign.prompts.fewshot import parse_examples
from lightning_selfalign.sandbox import execute

EXAMPLES = load_examples()


def run_code_and_tests(code: str, tests: str) -> tuple[bool, str]:
    """Pass/fail of code + tests in the project's sandbox (an exit code of 0 proves nothing)."""
    result = execute(code, tests)
    return result.verdict == "pass", f"{result.verdict}: {result.reason}"


def test_pool_is_large_and_covers_every_category_and_difficulty() -> None:
    assert len(EXAMPLES) >= 20
    assert len({example.name for example in EXAMPLES}) == len(EXAMPLES)
    cells = {(example.category, example.difficulty) for example in EXAMPLES}
    assert cells == {(c, d) for c in CATEGORIES for d in DIFFICULTIES}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example_solution_passes_its_tests(example) -> None:
    passed, why = run_code_and_tests(example.code, example.tests)
    assert passed, f"{example.name}: {why}"


def parts(example) -> Parts:
    return Parts(example.reasoning, example.code, example.explanation, example.tests)


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example_is_well_formed(example) -> None:
    seed = ast.parse(example.seed).body
    assert len(seed) == 1 and isinstance(seed[0], ast.FunctionDef) and ast.get_docstring(seed[0])
    assert any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(example.tests)))
    if example.category == "program":
        assert 'if __name__ == "__main__":' in example.code
        assert "input(" not in example.code and "stdin" not in example.code
    if example.category == "class":
        assert any(isinstance(node, ast.ClassDef) for node in ast.parse(example.code).body)
    for name in FORMATS:  # every layout reads back what it wrote
        response = get_format(name).render_response(parts(example))
        parsed = parse_output("responses", response, name)
        written = cut_at_stop(response, get_format(name).stop("responses")).strip()  # selfcodealign stops at </tests>
        assert parsed.fields == {"response": written, "code": example.code, "tests": example.tests}, name


def test_examples_do_not_contain_the_delimiters() -> None:
    for example in EXAMPLES:
        for text in (example.seed, example.instruction, example.reasoning, example.explanation, example.code):
            assert "[/example]" not in text and "## Example" not in text, example.name
            assert not any(f"[{tag}]" in text for tag in ("Reasoning", "Implementation", "Explanation", "Tests"))
            assert "</response>" not in text and "<tests>" not in text


ROW = {
    "id": "r1",
    "seed": 'def add(a, b):\n    """Add."""\n    return a + b\n',
    "concepts": ["integer addition", "pure functions"],
    "category": "class",
    "difficulty": "hard",
    "instruction": "Write a function `double(x)` that returns twice `x`.",
}


@pytest.mark.parametrize("stage", STAGES)
def test_v1_completion_prompt_is_deterministic_and_ends_at_the_answer_tag(stage: str) -> None:
    v1 = {"num_fewshot": 3, "prompt_format": "selfalign-v1"}
    first = build_prompt(stage, ROW, rng=random.Random(7), **v1)
    again = build_prompt(stage, ROW, rng=random.Random(7), **v1)
    assert first == again and first.messages is None
    assert first.text.count("### Example") == 4
    assert first.text.endswith({"concepts": "[concepts]\n", "instructions": "[instruction]\n",
                                "responses": "[response]\n"}[stage])  # fmt: skip
    assert first.text.count("[/example]") == 3 and "[/example]" in first.stop
    others = {build_prompt(stage, ROW, rng=random.Random(seed), **v1).text for seed in range(8)}
    assert len(others) > 1, "the rng must change which examples are shown"
    assert first.fingerprint == prompt_fingerprint(stage, **v1)
    assert first.fingerprint != prompt_fingerprint(stage, num_fewshot=3), "the format is part of the digest"


@pytest.mark.parametrize("stage", STAGES)
def test_chat_prompt_alternates_roles(stage: str) -> None:
    prompt = build_prompt(stage, ROW, rng=random.Random(0), chat=True, num_fewshot=2)
    assert prompt.text is None
    roles = [message["role"] for message in prompt.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt.fingerprint != build_prompt(stage, ROW, rng=random.Random(0), num_fewshot=2).fingerprint


def test_v1_instruction_examples_prefer_the_rows_category() -> None:
    for category in CATEGORIES:
        prompt = build_prompt("instructions", {**ROW, "category": category}, rng=random.Random(1), num_fewshot=4,
                              prompt_format="selfalign-v1")  # fmt: skip
        shown = [line.split(": ")[1] for line in prompt.text.splitlines() if line.startswith("category: ")]
        assert shown[:-1] == [category] * 4 and shown[-1] == category


def test_zero_shot_and_missing_fields() -> None:
    prompt = build_prompt("responses", ROW, rng=random.Random(0), num_fewshot=0)
    assert prompt.text.count("## Example") == 1
    with pytest.raises(ValueError, match="instruction"):
        build_prompt("responses", {"id": "x"}, rng=random.Random(0))
    with pytest.raises(ValueError, match="unknown stage"):
        build_prompt("summaries", ROW, rng=random.Random(0))


def test_parse_concepts() -> None:
    assert parse_output("concepts", "- a\n- b\n- a\n[/example]\n### Example 9\n- c", "selfalign-v1").fields == {
        "concepts": ["a", "b"]
    }
    assert parse_output("concepts", "\nloops, sorting\n\n## Example 3\n### Snippet").fields == {
        "concepts": ["loops", "sorting"]
    }
    assert parse_output("concepts", "recursion, memoization; caching").fields == {
        "concepts": ["recursion", "memoization; caching"]
    }
    assert parse_output("concepts", "1. loops\n2) sorting.").fields == {"concepts": ["loops", "sorting"]}
    assert parse_output("concepts", "  \n## Example 2").drop_reason == "no_concepts"


def test_parse_instruction() -> None:
    assert parse_output("instructions", "  Write f.\n[/example] junk", "selfalign-v1").fields == {
        "instruction": "Write f."
    }
    assert parse_output("instructions", "\nWrite f.\n\n## Example 3\nmore").fields == {"instruction": "Write f."}
    assert parse_output("instructions", "\n\n## Example 3\nmore").drop_reason == "empty_instruction"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_response"),
        ("just words", "no_code_block"),
        ("```python\ndef f():\n    return 1\n```", "no_tests"),
        ("```python\ndef f(:\n```\n```python\nassert f()\n```", "unparseable_code"),
        ("```python\ndef f():\n    return 1\n```\n```python\nassert (\n```", "unparseable_tests"),
        ("```python\ndef f():\n    return 1\n```\n```python\nprint(f())\n```", "no_asserts"),
    ],
)
def test_v1_parse_response_drop_reasons(text: str, reason: str) -> None:
    parsed = parse_output("responses", text, "selfalign-v1")
    assert parsed.fields is None and parsed.drop_reason == reason


def test_v1_parse_response_takes_the_last_two_blocks_and_cuts_at_stop() -> None:
    text = get_format("selfalign-v1").render_response(Parts(
        "Idea: `x * 2`.\n\n```python\nx * 2\n```", "def f(x):\n    return x * 2", "", "assert f(2) == 4"))  # fmt: skip
    parsed = parse_output(
        "responses", text + "\n[/example]\n\n### Example 5\n```python\nassert False\n```", "selfalign-v1"
    )
    assert parsed.fields["code"] == "def f(x):\n    return x * 2"
    assert parsed.fields["tests"] == "assert f(2) == 4"
    assert parsed.fields["response"] == text


def test_invalid_fewshot_file_lists_every_problem(tmp_path: Path) -> None:
    data = yaml.safe_load((Path(lightning_selfalign.__file__).parent / "prompts" / "fewshot.yaml").read_text())
    data[0]["category"] = "module"
    del data[1]["tests"]
    with pytest.raises(ValueError) as info:
        parse_examples(data, tmp_path / "fewshot.yaml")
    assert "category must be one of" in str(info.value) and "missing field 'tests'" in str(info.value)


def test_sandbox_check_rejects_a_wrong_solution() -> None:
    passed, _ = run_code_and_tests("def f():\n    return 1\n", "assert f() == 2\n")
    assert not passed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.category == "program"], ids=lambda e: e.name)
def test_program_examples_run_as_scripts_without_input(example) -> None:
    run = subprocess.run(
        [sys.executable, "-I", "-c", example.code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip(), run.stderr[-2000:]
