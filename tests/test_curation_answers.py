"""The static answer checks (lightning_selfalign.curation.answers) and per_instruction selection in curate()."""

from lightning_selfalign.curation import CurationConfig, curate
from lightning_selfalign.curation.answers import (
    defines_named_function,
    named_function,
    stated_values,
    uses_stated_values,
)

INSTRUCTION = (
    "Write a Python function `keep_join(s: str, xs: list[int]) -> str`. Given a string, keep the first 3 "
    "characters, then add -2 to each element, then join the elements with '-'."
)
RIGHT = '''def keep_join(s: str, xs: list[int]) -> str:
    """Given a string, keep the first 3 characters, then join the elements with '-'."""
    s = s[:3]
    return '-'.join(str(v - 2) for v in xs) + s
'''


def test_named_function_is_the_first_backticked_call():
    assert named_function(INSTRUCTION) == "keep_join"
    assert named_function("Implement `def parse(text)` and `dump(x)`.") == "parse"
    assert named_function("Write a function that sums a list.") is None


def test_defines_named_function():
    assert defines_named_function(INSTRUCTION, RIGHT)
    assert not defines_named_function(INSTRUCTION, RIGHT.replace("def keep_join", "def keep_join_all"))
    assert not defines_named_function(INSTRUCTION, "def keep_join(:\n")  # unparsable code answers nothing
    assert defines_named_function("Write a function that sums a list.", "def total(xs):\n    return sum(xs)\n")
    method = "class A:\n    def keep_join(self, s, xs):\n        return s\n"
    assert defines_named_function(INSTRUCTION, method)


def test_stated_values_skip_signature_code_and_apostrophes():
    assert stated_values(INSTRUCTION) == {3, 2, "-"}
    text = "Write `f(x: list[int])` for the string's end.\n```python\nf(7) == 8\n```\nUse 'ab' and \"cd\"."
    assert stated_values(text) == {"ab", "cd"}


def test_uses_stated_values_ignores_the_docstring():
    assert uses_stated_values(INSTRUCTION, RIGHT)
    wrong = RIGHT.replace("s[:3]", "s[:4]")  # 3 is left only in the restated docstring
    assert not uses_stated_values(INSTRUCTION, wrong)
    assert not uses_stated_values(INSTRUCTION, "def keep_join(:\n")
    assert uses_stated_values("Write a function that sums a list.", "def total(xs):\n    return sum(xs)\n")


def _row(id, parent, code, verdict="pass"):
    return {
        "id": id,
        "parent_id": parent,
        "instruction": INSTRUCTION,
        "response": f"```python\n{code}```\n",
        "code": code,
        "tests": "assert True",
        "verdict": verdict,
    }


def test_curate_drops_rows_that_answer_another_instruction():
    rows = [
        _row("a", "p", RIGHT),
        _row("b", "p", RIGHT.replace("def keep_join", "def keep")),
        _row("c", "p", RIGHT.replace("s[:3]", "s[:4]")),
    ]
    config = CurationConfig(
        require_named_function=True,
        require_stated_values=True,
        per_instruction=3,
        dedup_fields=["code"],
        function_name_dedup=False,
        progress=False,
    )
    result = curate(rows, config)
    assert [row["id"] for row in result.rows] == ["a"]
    assert result.stats()["dropped"]["filter"] == {"named_function_missing": 1, "stated_value_missing": 1}
    assert len(curate(rows, CurationConfig(progress=False)).rows) == 1  # checks off: one random row per instruction


def test_per_instruction_keeps_the_best_k_in_input_order():
    rows = [_row(f"r{i}", "p" if i < 4 else "q", RIGHT.replace("3]", f"{3 + i}]")) for i in range(6)]
    for row, tests_run in zip(rows, (1, 3, 2, 3, 1, 1)):
        row["tests_run"] = tests_run
    config = CurationConfig(
        select="most_tests", per_instruction=2, dedup_fields=["code"], function_name_dedup=False, progress=False
    )
    result = curate(rows, config)
    assert [row["id"] for row in result.rows] == ["r1", "r3", "r4", "r5"]
    assert result.stats()["dropped"]["select"] == {"not_selected": 2}
    assert CurationConfig(per_instruction=0).problems() == ["--per_instruction must be at least 1, got 0"]
    assert "leave instruction out of --dedup_fields" in CurationConfig(per_instruction=2).problems()[0]
