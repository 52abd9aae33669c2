"""The execution filter over JSONL: :func:`execute_rows` (rows in), :func:`execute_file` (a file, on this machine or
a Ray cluster; the rounds call it too) and ``selfalign execute`` (:func:`execute_command`).

Rows are appended and flushed as they finish, so a killed run loses nothing; rerunning the same command
skips ids already in the output. A sample that timed out is retried once, alone, at the end of the batch
(on a small, busy machine contention alone can cause a timeout); only its second result is written.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import JsonlAppender, finished_ids, read_jsonl, refuse_output_among_inputs, write_stats
from lightning_selfalign.options import ExecutionOptions, document_flags, from_flags
from lightning_selfalign.records import REQUIRED_EXECUTE
from lightning_selfalign.sandbox.pool import SandboxPool
from lightning_selfalign.sandbox.types import ExecutionResult, Limits, Verdict


def _checked(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for index, row in enumerate(rows):
        bad = [f for f in REQUIRED_EXECUTE if not isinstance(row.get(f), str if f != "id" else (str, int))]
        if bad:
            fields = ", ".join(bad)
            raise UserError(f"row {index + 1} (id {row.get('id')!r}): field(s) {fields} missing or not a string")
        yield row


def todo_rows(rows: Iterable[dict[str, Any]], finished: set[str], skipped: Counter) -> Iterator[dict[str, Any]]:
    """Rows whose id is not in the output yet; a repeated input id runs once."""
    seen: set[str] = set()
    for row in _checked(rows):
        key = str(row["id"])
        if key in seen:
            skipped["duplicate_id"] += 1
        elif key in finished:
            skipped["already_done"] += 1
        else:
            seen.add(key)
            yield row
        seen.add(key)


def execute_rows(
    rows: Iterable[dict[str, Any]],
    output: str | Path,
    limits: Limits | None = None,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    retry_timeouts: bool = True,
    progress: bool = True,
    pool: SandboxPool | None = None,
) -> dict[str, Any]:
    """Execute every row's ``code`` + ``tests`` and append it with ``verdict``, ``reason``, ``tests_run``,
    ``duration_s`` to ``output`` (other fields untouched); resumes a partial output. Returns the stats."""
    limits = limits or Limits()
    started = time.monotonic()
    finished = finished_under(output, limits_of(limits))
    skipped: Counter = Counter()
    verdicts: Counter = Counter()
    own_pool = pool is None
    pool = pool or SandboxPool(workers=workers, isolation=isolation, allow_unsafe=allow_unsafe)
    retried: list[dict[str, Any]] = []
    bar = tqdm(desc="execute", unit="sample", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        with JsonlAppender(output) as out:
            pairs = pool.map(todo_rows(rows, finished, skipped), limits, lambda row: (row["code"], row["tests"]))
            for row, result in pairs:
                if retry_timeouts and result.verdict == Verdict.TIMEOUT:
                    retried.append(row)
                    continue
                _write(out, row, result, limits, verdicts, bar)
            for row in retried:  # alone: the other helpers are idle now
                _write(out, row, pool.run(row["code"], row["tests"], limits), limits, verdicts, bar)
    finally:
        if not bar.disable:
            bar.set_postfix(dict(verdicts.most_common()), refresh=False)
        bar.close()
        if own_pool:
            pool.close()
    stats = _stats(verdicts, skipped, retried, pool, limits, time.monotonic() - started)
    write_stats(output, stats)
    return stats


def limits_of(limits: Limits) -> dict[str, Any]:
    """The limits that can change a verdict, recorded in every executed row."""
    return {"timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb, "run_as_main": limits.run_as_main,
            "policy": limits.policy}  # fmt: skip


def finished_under(output: str | Path, limits: dict[str, Any]) -> set[str]:
    """Ids already in ``output``; a row executed under other limits is an error, never silently kept."""

    def same_limits(row: dict[str, Any]) -> None:
        recorded = row.get("limits")
        if recorded is not None and {"policy": False, **recorded} != limits:  # rows from before the policy: off
            given = ", ".join(f"{k}={v}" for k, v in recorded.items())
            raise UserError(f"{output}: rows were executed under other limits ({given}); rerun with those, or "
                            "write to a new --output to execute under the new ones")  # fmt: skip

    return finished_ids(output, check=same_limits)


def _write(out: JsonlAppender, row: dict, result: ExecutionResult, limits: Limits, verdicts: Counter,
           bar: tqdm) -> None:  # fmt: skip
    out.write({**row, **result.row_fields(), "limits": limits_of(limits)})
    new_kind = result.verdict not in verdicts
    verdicts[result.verdict] += 1
    bar.update()
    if not bar.disable and (new_kind or bar.n % 32 == 0):  # shown ~10 times a second; formatting them costs
        bar.set_postfix(dict(verdicts.most_common()), refresh=False)


def _stats(verdicts: Counter, skipped: Counter, retried: list, pool: SandboxPool, limits: Limits, seconds: float):
    executed = sum(verdicts.values())
    return {
        "rows_executed": executed,
        "rows_out": executed,
        "skipped": dict(skipped),
        "verdicts": dict(verdicts),
        "timeouts_retried": len(retried),
        "isolation": pool.mode,
        "protections": pool.protections,
        "helpers_replaced": pool.replaced,
        "limits": vars(limits),
        "seconds": round(seconds, 3),
        "samples_per_s": round(executed / seconds, 1) if seconds > 0 else None,
    }


def execute_file(
    input: str | Path,
    output: str | Path,
    execution: ExecutionOptions,
    retry_timeouts: bool = True,
    allow_empty: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Execute the rows of ``input`` (``id``, ``code``, ``tests``) under ``execution``'s limits, on this machine or
    across a Ray cluster, appending them with their verdicts to ``output``; an empty input is an error unless
    ``allow_empty``. Returns the stats."""
    problems = execution.problems()
    if problems:
        raise UserError("; ".join(problems))
    refuse_output_among_inputs(input, output)
    types = {"id": (str, int), "code": str, "tests": str}
    rows = read_jsonl(input, required=REQUIRED_EXECUTE, types=types, allow_empty=allow_empty)
    sandbox = (execution.limits(), execution.workers, execution.isolation, execution.allow_unsafe)
    if execution.executor == "ray":
        from lightning_selfalign.sandbox.ray_executor import execute_rows_ray

        return execute_rows_ray(rows, output, *sandbox, execution.ray_address, progress)
    return execute_rows(rows, output, *sandbox, retry_timeouts, progress)


@document_flags(ExecutionOptions)
def execute_command(
    input: str,
    output: str,
    timeout: float = 4.0,
    memory: int = 1024,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    retry_timeouts: bool = True,
    run_as_main: bool = False,
    policy: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run each row's code + tests in the sandbox and write the rows with their verdicts.

    The sandbox flags are the fields of ExecutionOptions (lightning_selfalign.options), which selfalign self-align
    takes as --execution.X.

    Args:
        input: JSONL with ``id``, ``code``, ``tests`` per row (other fields pass through).
        output: JSONL to append to; rerunning resumes, skipping ids already there.
        retry_timeouts: retry a timed-out sample once, alone, at the end.
        progress: show a progress bar.
    """
    execution = from_flags(ExecutionOptions, locals())
    stats = execute_file(input, output, execution, retry_timeouts=retry_timeouts, progress=progress)
    _print_summary(input, output, stats)
    return stats


def _print_summary(input: str, output: str, stats: dict[str, Any]) -> None:
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(stats["verdicts"].items(), key=lambda kv: -kv[1]))
    skipped = ", ".join(f"{k} {v}" for k, v in stats["skipped"].items()) or "none"
    print(
        f"execute: {input} -> {output}: {stats['rows_executed']} executed ({verdicts or 'none'}); skipped: {skipped}; "
        f"{stats['samples_per_s']} samples/s; isolation {stats['isolation']}",
        file=sys.stderr,
    )
