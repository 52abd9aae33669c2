"""Each response sanitising step on realistic model output."""

from __future__ import annotations

import ast
import random

from lightning_selfalign.curation import sanitize

CODE = """def moving_average(values, window):
    # a window larger than the data gives no averages
    if window > len(values):
        return []
    total = sum(values[:window])  # first window
    result = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        result.append(total / window)
    return result"""
TESTS = "assert moving_average([1, 2, 3, 4], 2) == [1.5, 2.5, 3.5]\nassert moving_average([1], 3) == []"
RESPONSE = (
    "A running sum avoids re-adding each window: add the new value, subtract the one that left.\n\n"
    f"```py\n{CODE}\n```\n\nTests:\n\n```Python\n{TESTS}\n```"
)


def test_normalize_fences_tags_python_and_closes_the_last_block() -> None:
    text = sanitize.normalize_fences(RESPONSE + "\n\nAlso:\n```\nprint(moving_average([2, 4], 1))   ")
    assert text.count("```python") == 3 and text.count("```") == 6
    assert text.endswith("print(moving_average([2, 4], 1))\n```")
    assert "```py\n" not in text and "```Python" not in text


def test_normalize_fences_keeps_blank_lines_inside_code() -> None:
    text = sanitize.normalize_fences("Intro.\n\n\n\n```python\ndef f():\n\n\n    return 1\n```")
    assert "Intro.\n\n```python" in text and "def f():\n\n\n    return 1" in text


def test_strip_chatter_cuts_run_on_and_pleasantries_but_keeps_explanation() -> None:
    response = (
        sanitize.normalize_fences(RESPONSE)
        + "\n\nThe function runs in O(n).\n\nI hope this helps! Let me know if you have questions."
        + "\n\n### Example 5\n[task]\nWrite something else."
    )
    text = sanitize.strip_chatter(response)
    assert text.endswith("The function runs in O(n).")
    assert "Example 5" not in text and "hope" not in text


def test_strip_chatter_ignores_markers_inside_code() -> None:
    response = "Done.\n\n```python\nprint('### Example 1')\n```"
    assert sanitize.strip_chatter(response) == response


def test_drop_tests_removes_the_block_and_its_heading() -> None:
    text = sanitize.drop_tests(sanitize.normalize_fences(RESPONSE), TESTS)
    assert "assert" not in text and "Tests:" not in text
    assert text.rstrip().endswith("return result\n```")


def test_drop_tests_leaves_a_response_without_those_tests_alone() -> None:
    assert sanitize.drop_tests(RESPONSE, "assert other() == 1") == RESPONSE


def test_strip_comments_keeps_code_and_hashes_in_strings() -> None:
    response = f"Intro # not code.\n\n```python\n{CODE}\nlabel = '# not a comment'\n```"
    text = sanitize.strip_comments(response)
    body = text.split("```python\n")[1].split("```")[0]
    assert "window larger" not in body and "first window" not in body
    assert "'# not a comment'" in body and "Intro # not code." in text
    assert ast.dump(ast.parse(body)) == ast.dump(ast.parse(CODE + "\nlabel = '# not a comment'"))


def test_assert_augmentation_is_seeded_and_respects_probability() -> None:
    instruction = "Write `moving_average(values, window)` returning the averages of each window."
    augmented = sanitize.assert_augmented_instruction(instruction, TESTS, random.Random(3), 1.0)
    assert augmented.startswith(instruction) and "should pass the following assertion" in augmented
    assert augmented == sanitize.assert_augmented_instruction(instruction, TESTS, random.Random(3), 1.0)
    assert sanitize.assert_augmented_instruction(instruction, TESTS, random.Random(3), 0.0) == instruction
    shown = instruction + " For example, moving_average([1, 2], 1) gives [1.0, 2.0]."
    assert sanitize.assert_augmented_instruction(shown, TESTS, random.Random(3), 1.0) == shown


def test_is_incomplete_flags_placeholders_only() -> None:
    assert sanitize.is_incomplete("```python\ndef f():\n    # TODO: handle negatives\n    return 1\n```")
    assert sanitize.is_incomplete("def f():\n    # Your code here\n    pass")
    assert not sanitize.is_incomplete("todo = []\nclass Base:\n    def run(self):\n        raise NotImplementedError")
