"""Seed mining: every filter on a crafted corpus, determinism, the CLI, and the standard-library yield."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lightning_selfalign.errors import UserError
from lightning_selfalign.seeds import SeedFilters, mine_seeds, mine_seeds_command

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
def test_every_filter_counts_its_drops(corpus: Path) -> None:
    rows, stats = mine_seeds([corpus], SeedFilters(type_check=False), workers=1)
    names = sorted(ast.parse(row["seed"]).body[0].name for row in rows)
    assert names == ["encode", "push_all", "scale"]
    assert stats["dropped"] == {
        "unparseable_file": 1, "no_docstring": 1, "no_arguments": 2, "no_return_value": 1, "too_short": 1,
        "todo_marker": 1, "banned_import": 1, "exact_duplicate": 1, "benchmark_overlap": 1,
    }  # fmt: skip
    assert stats["files"] == 5 and stats["kept"] == 3
    method = next(row for row in rows if "push_all" in row["seed"])
    assert method["seed"].startswith("def push_all(self, items):")
    for row in rows:
        assert row["parent_id"] is None and row["round"] == 0 and row["lang"] == "python"
        path, line = row["source"].rsplit(":", 1)
        assert Path(path).read_text().splitlines()[int(line) - 1].lstrip().startswith("def ")


@pytest.mark.timeout(120)
def test_module_scope_ban_and_top_level_only(corpus: Path) -> None:
    rows, stats = mine_seeds([corpus], SeedFilters(banned_scope="module", methods=False, type_check=False), workers=1)
    assert [ast.parse(row["seed"]).body[0].name for row in rows] == ["scale"]
    assert stats["dropped"]["banned_import"] == 2


@pytest.mark.timeout(120)
def test_ids_are_stable_and_workers_do_not_change_the_output(corpus: Path) -> None:
    serial, _ = mine_seeds([corpus], SeedFilters(type_check=False), workers=1)
    parallel, _ = mine_seeds([corpus], SeedFilters(type_check=False), workers=2)
    assert serial == parallel
    assert len({row["id"] for row in serial}) == len(serial)
    other, _ = mine_seeds([corpus], SeedFilters(type_check=False, max_lines=100), workers=1)
    assert [row["id"] for row in other] == [row["id"] for row in serial]
    assert other[0]["fingerprint"] != serial[0]["fingerprint"], "the fingerprint follows the settings"


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


@pytest.mark.timeout(300)
def test_standard_library_yields_1000_seeds_in_two_minutes(tmp_path: Path) -> None:
    output = tmp_path / "seeds.jsonl"
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "lightning_selfalign", "seeds", "--output", str(output), "--workers", "2"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) >= 1000 and elapsed <= 120, (len(rows), elapsed)
    for row in rows:
        function = ast.parse(row["seed"]).body[0]
        assert isinstance(function, ast.FunctionDef) and ast.get_docstring(function)
    assert len({row["id"] for row in rows}) == len(rows)
    stats = json.loads(output.with_name("seeds.stats.json").read_text())
    assert stats["kept"] == len(rows) and stats["dropped"]["no_docstring"] > 0
    assert "dropped no_docstring" in run.stderr
