"""Peer tests: passing code run against its sibling responses' tests in the real sandbox, the counts curation reads,
resuming, and the errors that name what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_selfalign.curation import CurationConfig, curate
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl, write_jsonl
from lightning_selfalign.rounds.settings import RoundSettings
from lightning_selfalign.sandbox import Limits, SandboxPool
from lightning_selfalign.sandbox.peers import peer_check_rows, peer_pairs

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="needs Linux")

RIGHT = "def scale(n: int) -> int:\n    return n * 3 + 1"
MISREAD = "def scale(n: int) -> int:\n    return n * 2 + 1"  # a constant misread...
RIGHT_TESTS = "for n in (1, 2, 5):\n    assert scale(n) == n * 3 + 1"
MIRRORED_TESTS = "for n in (1, 2, 5):\n    assert scale(n) == n * 2 + 1"  # ...and restated by its own tests
WRONG_NAME_TESTS = "assert scael(2) == 7"


def response(parent: str, index: int, code: str, tests: str, verdict: str) -> dict:
    return {"id": f"{parent}-{index}", "parent_id": parent, "instruction": f"Write scale ({parent}).",
            "response": f"```python\n{code}\n```\n\n```python\n{tests}\n```", "code": code, "tests": tests,
            "verdict": verdict, "tests_run": 3}  # fmt: skip


def siblings() -> list[dict]:
    """One instruction's four samples: right and self-consistent; wrong and self-consistent (its tests repeat its
    mistake); wrong code with right tests (failed its own); right code whose tests misname it (failed its own)."""
    return [
        response("p1", 0, RIGHT, RIGHT_TESTS, "pass"),
        response("p1", 1, MISREAD, MIRRORED_TESTS, "pass"),
        response("p1", 2, MISREAD, RIGHT_TESTS + "\n", "fail"),
        response("p1", 3, RIGHT, WRONG_NAME_TESTS, "error"),
    ]


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as pool:
        yield pool


def test_only_passing_code_runs_against_distinct_sibling_tests() -> None:
    rows = siblings()
    # row 2's tests are row 0's with a trailing newline: the same text, so row 0 has one distinct sibling set less
    assert peer_pairs(rows, 7) == [(7, 0, 1), (7, 0, 3), (7, 1, 0), (7, 1, 3)]


def test_counts_tell_the_right_code_from_the_self_consistent_mistake(tmp_path: Path, pool: SandboxPool) -> None:
    rows = siblings() + [response("p2", 0, RIGHT, RIGHT_TESTS, "pass")]  # an instruction with one sample
    stats = peer_check_rows(rows, tmp_path / "peers.jsonl", pool, Limits(timeout_s=4.0, policy=True), progress=False)
    written = list(read_jsonl(tmp_path / "peers.jsonl"))
    assert [row["id"] for row in written] == [row["id"] for row in rows], "input order, every row once"
    counts = {row["id"]: (row["peer_tests"], row["peer_passes"]) for row in written}
    assert counts == {"p1-0": (2, 0), "p1-1": (2, 0), "p1-2": (0, 0), "p1-3": (0, 0), "p2-0": (0, 0)}
    assert stats["peer_runs"] == 4 and stats["rows_with_a_peer_pass"] == 0

    rows[2]["tests"] = RIGHT_TESTS + "\nassert scale(0) == 1"  # now a distinct set the right code passes
    again = peer_check_rows(rows, tmp_path / "again.jsonl", pool, Limits(timeout_s=4.0), progress=False)
    counts = {row["id"]: (row["peer_tests"], row["peer_passes"]) for row in read_jsonl(tmp_path / "again.jsonl")}
    assert counts["p1-0"] == (3, 1) and counts["p1-1"] == (3, 0)
    assert again["rows_with_a_peer_pass"] == 1


def test_a_rerun_skips_instructions_already_written(tmp_path: Path, pool: SandboxPool) -> None:
    rows = siblings() + [response("p2", i, RIGHT, RIGHT_TESTS + f"\nassert scale({i}) == {3 * i + 1}", "pass")
                         for i in range(3)]  # fmt: skip
    output = tmp_path / "peers.jsonl"
    write_jsonl(output, [{**row, "peer_tests": 0, "peer_passes": 0} for row in rows[:4]])  # p1 done, then killed
    stats = peer_check_rows(rows, output, pool, Limits(timeout_s=4.0), progress=False)
    written = list(read_jsonl(output))
    assert [row["id"] for row in written] == [row["id"] for row in rows], "nothing lost, nothing twice"
    assert stats["skipped_already_done"] == 4 and stats["peer_runs"] == 6
    assert all(row["peer_passes"] == 2 for row in written[4:]), "each right p2 sample passes both siblings' tests"


def test_curation_keeps_the_code_that_agrees_with_its_siblings() -> None:
    rows = [{**row, "peer_tests": 2, "peer_passes": passes} for row, passes in zip(siblings(), (1, 0, 0, 0))]
    config = CurationConfig(select="peer_agreement", seed=0, near_dedup=False, exact_dedup=False)
    assert [row["id"] for row in curate(rows, config).rows] == ["p1-0"]
    strict = curate([rows[1]], CurationConfig(min_peer_passes=1, near_dedup=False))
    assert strict.rows == [] and strict.stats()["dropped"]["filter"] == {"peer_passes<1": 1}
    with pytest.raises(UserError, match="selfalign peer-check"):
        curate(siblings(), CurationConfig(min_peer_passes=1, near_dedup=False))
    assert CurationConfig(min_peer_passes=-1).problems() == ["--min_peer_passes must be >= 0, got -1"]


def test_the_loop_refuses_peer_curation_without_peer_tests(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("{}\n")
    settings = RoundSettings(model="m", train_config=str(config), curation=CurationConfig(min_peer_passes=1))
    assert any("--peer_tests true" in problem for problem in settings.problems())
    settings.peer_tests = True
    assert not any("peer" in problem for problem in settings.problems())


def test_command_writes_rows_and_stats(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "executed.jsonl", siblings())
    done = subprocess.run([sys.executable, "-m", "lightning_selfalign", "peer-check", "--input",
                           str(tmp_path / "executed.jsonl"), "--output", str(tmp_path / "peers.jsonl"),
                           "--progress", "false"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 runs over 1 instructions" in done.stdout
    assert len(list(read_jsonl(tmp_path / "peers.jsonl"))) == 4
    assert json.loads((tmp_path / "peers.stats.json").read_text())["peer_runs"] == 4


def test_a_round_curates_from_its_peer_checked_rows(tmp_path: Path) -> None:
    from lightning_selfalign.rounds.data_round import curate_round
    from lightning_selfalign.rounds.state import RoundPaths

    paths = RoundPaths(tmp_path, 0)
    paths.dir.mkdir(parents=True)
    rows = siblings()
    rows[2]["tests"] = RIGHT_TESTS + "\nassert scale(0) == 1"
    write_jsonl(paths.executed, rows)
    curation = CurationConfig(select="peer_agreement", min_peer_passes=1, near_dedup=False, progress=False)
    settings = RoundSettings(model="m", train_config="t.yaml", curation=curation, peer_tests=True, progress=False)
    assert curate_round(paths, settings) == 1
    assert [row["id"] for row in read_jsonl(paths.sft)] == ["p1-0"]
    assert [row["peer_passes"] for row in read_jsonl(paths.peers)] == [1, 0, 0, 0]
