"""Seed mining: every filter on a crafted corpus, determinism, the CLI, and the standard-library yield."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import scripted

from lightning_selfalign.errors import UserError
from lightning_selfalign.seed_judge import EXAMPLES, approves, judge_prompt, split_docstring
from lightning_selfalign.seed_typing import type_checker
from lightning_selfalign.seeds import WIDE_BANNED_IMPORTS, SeedFilters, mine_seeds, mine_seeds_command

KEPT = '''
def scale(values, factor):
    """Multiply every value by factor."""
    result = [v * factor for v in values]
    total = sum(result)
    return result, total
'''
FILES = {
    "good.py": KEPT
    + '''

def no_doc(values):
    result = list(values)
    result.sort()
    return result


def no_args():
    """Nothing to take."""
    value = 1
    value += 1
    return value


def no_return(values):
    """Prints instead of returning."""
    for value in values:
        print(value)
    return


def short(x):
    """Too short."""
    return x


def marked(values):
    """Has a marker."""
    # TODO: make it faster
    result = sorted(values)
    return result


class Stack:
    """A stack."""

    def push_all(self, items):
        """Push every item; return the new size."""
        for item in items:
            self.items.append(item)
        return len(self.items)

    def size(self):
        """No argument but self."""
        count = len(self.items)
        count += 0
        return count
''',
    "uses_os.py": '''
import os
import json


def home_of(user):
    """The home directory of user."""
    base = os.path.expanduser("~" + user)
    base = base.rstrip("/")
    return base


def encode(payload):
    """JSON-encode a payload with sorted keys."""
    text = json.dumps(payload, sort_keys=True)
    text = text.strip()
    return text
''',
    "copy.py": KEPT,
    "broken.py": "def broken(:\n",
    "tests/test_x.py": KEPT.replace("scale", "scale_in_tests"),
    "humaneval.py": '''
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True
    return False
''',
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.mark.timeout(120)
def test_reference_rules_count_each_drop(corpus: Path) -> None:
    rows, stats = mine_seeds([corpus], SeedFilters(type_check=False), workers=1)
    names = sorted(ast.parse(row["seed"]).body[-1].name for row in rows)
    assert names == ["encode", "scale", "short"], "top-level functions only; no minimum length"
    assert stats["dropped"] == {
        "unparseable_file": 1, "no_docstring": 1, "no_arguments": 1, "no_return_value": 1, "banned_word": 1,
        "banned_import": 1, "exact_duplicate": 1, "benchmark_overlap": 1,
    }  # fmt: skip
    assert stats["files"] == 5 and stats["kept"] == 3
    encode = next(row["seed"] for row in rows if "def encode" in row["seed"])
    assert encode.startswith("import json\n"), "the imports a seed needs are added, and kept"
    for row in rows:
        assert row["parent_id"] is None and row["round"] == 0 and row["lang"] == "python"
        path, line = row["source"].rsplit(":", 1)
        assert Path(path).read_text().splitlines()[int(line) - 1].lstrip().startswith("def ")


def test_reference_rules_match_text_as_the_reference_does(tmp_path: Path) -> None:
    """``bug`` inside ``debug`` and ``import os`` inside ``import os.path`` drop a seed, as in the reference."""
    tmp_path.joinpath("m.py").write_text(
        textwrap.dedent('''
        def run(flag):
            """Turn on debugging when flag is set."""
            return {"debug": bool(flag)}


        def joined(parts):
            """Join path parts."""
            import os.path
            return os.path.join(*parts)


        def quoted(value):
            \'\'\'Single-quoted docstring.\'\'\'
            return value
    ''')
    )
    rows, stats = mine_seeds([tmp_path], SeedFilters(type_check=False, decontaminate=False), workers=1)
    assert rows == [] and stats["dropped"] == {"banned_word": 1, "banned_import": 1, "no_docstring": 1}


@pytest.mark.timeout(120)
def test_wider_rules_are_one_option_set_away(corpus: Path) -> None:
    """This project's earlier mining: methods, what a function uses, the wide module list, 5 lines at least."""
    wide = SeedFilters(methods=True, banned_scope="function", banned_imports=WIDE_BANNED_IMPORTS, min_lines=5,
                       banned_words=("todo",), infer_imports=False, type_check=False)  # fmt: skip
    rows, stats = mine_seeds([corpus], wide, workers=1)
    assert sorted(ast.parse(row["seed"]).body[0].name for row in rows) == ["encode", "push_all", "scale"]
    method = next(row for row in rows if "push_all" in row["seed"])
    assert method["seed"].startswith("def push_all(self, items):")
    module, _ = mine_seeds([corpus], replace(wide, banned_scope="module", methods=False), workers=1)
    assert [ast.parse(row["seed"]).body[0].name for row in module] == ["scale"]


@pytest.mark.skipif(type_checker() is None, reason="no type checker: pip install 'lightning-selfalign[seeds]'")
@pytest.mark.timeout(180)
def test_type_check_drops_seeds_that_do_not_stand_alone(tmp_path: Path) -> None:
    tmp_path.joinpath("m.py").write_text(
        textwrap.dedent('''
        def words(text):
            """Lower-cased words of text, punctuation removed."""
            return re.findall(r"[a-z]+", text.lower())


        def helper_user(text):
            """Calls a helper of its own module, undefined once cut out."""
            return _private_helper(text)


        def wrong(n: int) -> str:
            """Returns an int where it promises a str."""
            return n + 1
    ''')
    )
    rows, stats = mine_seeds([tmp_path], SeedFilters(decontaminate=False), workers=1)
    assert [row["seed"].splitlines()[0] for row in rows] == ["import re"]
    assert stats["dropped"] == {"type_error": 2}
    assert any(note.startswith("type check (") for note in stats["notes"])


def test_docstring_judge_prompt_and_decision() -> None:
    code = '''def clamp(value, low, high):
    """Return value limited to [low, high]."""
    return max(low, min(value, high))'''
    doc, body = split_docstring(code)
    assert doc == "Return value limited to [low, high]." and '"""' not in body
    prompt = judge_prompt(code, "id-1")
    assert prompt.count("<issue_start>username_0:") == len(EXAMPLES) + 1 == 8
    assert [prompt.count(f"My answer is: {answer}\n") for answer in ("Yes", "No")] == [4, 3]
    assert prompt.endswith("\nUpvotes: 100<issue_comment>username_1: Happy to take a look.\nMy answer is:")
    assert prompt.count("Upvotes: 200") == 7
    assert judge_prompt(code, "id-1") == prompt and judge_prompt(code, "id-2") != prompt, "order drawn per seed"
    assert [approves(a) for a in (" Yes", " yes, no", "No", " Yes yes no", "")] == [True, False, False, True, False]


@pytest.mark.timeout(180)
def test_docstring_judge_runs_through_a_served_model(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    corpus.joinpath("m.py").write_text(
        textwrap.dedent('''
        def mean(values):
            """Arithmetic mean of a non-empty list of numbers."""
            return sum(values) / len(values)


        def helper(values):
            """Does the thing."""
            return sorted(values)[::-1]
    ''')
    )
    server = scripted()
    try:
        stats = mine_seeds_command(source=str(corpus), output=str(tmp_path / "seeds.jsonl"), type_check=False,
                                   decontaminate=False, judge_model="scripted", judge_engine="openai",
                                   judge_base_url=server.url, workers=1)  # fmt: skip
    finally:
        server.stop()
    rows = [json.loads(line) for line in (tmp_path / "seeds.jsonl").read_text().splitlines()]
    assert [row["seed"].split("(")[0] for row in rows] == ["def mean"]
    assert stats["dropped"] == {"docstring_judge": 1}
    assert "docstring judge: scripted (openai)" in stats["notes"]


LONGER = '''
def summarize(values, precision):
    """Mean, smallest and largest of values, rounded to precision digits."""
    if not values:
        raise ValueError("summarize needs at least one value")
    total = sum(values)
    mean = total / len(values)
    smallest = min(values)
    largest = max(values)
    return round(mean, precision), round(smallest, precision), round(largest, precision)
'''


def test_near_duplicates_are_removed(tmp_path: Path) -> None:
    tmp_path.joinpath("a.py").write_text(LONGER)
    tmp_path.joinpath("b.py").write_text(LONGER.replace("summarize needs", "it needs"))
    rows, stats = mine_seeds([tmp_path], SeedFilters(type_check=False, decontaminate=False), workers=1)
    assert len(rows) == 1 and stats["dropped"] == {"near_duplicate": 1}
    with pytest.raises(UserError, match="--near_duplicate_threshold"):
        mine_seeds_command(source=str(tmp_path), output=str(tmp_path / "o.jsonl"), near_duplicate_threshold=0)


def test_bad_options_and_sources_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--source: no such file or directory"):
        mine_seeds_command(source=str(tmp_path / "missing"), output=str(tmp_path / "o.jsonl"))
    with pytest.raises(UserError, match="no .py files"):
        mine_seeds_command(source=str(tmp_path), output=str(tmp_path / "o.jsonl"))
    with pytest.raises(UserError, match="--max_lines"):
        mine_seeds_command(source=str(tmp_path), output=str(tmp_path / "o.jsonl"), min_lines=10, max_lines=5)
    run = subprocess.run(
        [sys.executable, "-m", "lightning_selfalign", "seeds", "--source", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"error: --source: no such file or directory: {tmp_path / 'missing'}"]


@pytest.mark.skipif(type_checker() is None, reason="no type checker: pip install 'lightning-selfalign[seeds]'")
@pytest.mark.timeout(400)
def test_standard_library_under_the_reference_rules(tmp_path: Path) -> None:
    """The default (reference) rules over the standard library, type check included: each filter's count in the
    stats (2026-12-06, Python 3.11: 3,129 functions -> 222 seeds in 48 s on 2 cores)."""
    output = tmp_path / "seeds.jsonl"
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "lightning_selfalign", "seeds", "--output", str(output), "--workers", "2"],
        capture_output=True, text=True, timeout=360, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert 100 <= len(rows) <= 1000 and elapsed <= 300, (len(rows), elapsed)
    for row in rows:
        function = ast.parse(row["seed"]).body[-1]
        assert isinstance(function, ast.FunctionDef) and ast.get_docstring(function)
        assert not any(word in row["seed"].lower() for word in ("todo", "fixme", "bug"))
    assert len({row["id"] for row in rows}) == len(rows)
    stats = json.loads(output.with_name("seeds.stats.json").read_text())
    assert stats["kept"] == len(rows) and stats["preset"] == "starcoder2-instruct"
    for reason in ("no_docstring", "no_arguments", "no_return_value", "banned_word", "banned_import", "type_error"):
        assert stats["dropped"][reason] > 0, reason
    assert any(note.startswith("type check (") for note in stats["notes"])
    assert "docstring judge not run (no --judge_model)" in stats["notes"]
    assert "dropped type_error" in run.stderr
