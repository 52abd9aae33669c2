"""``selfalign execute --executor ray``: batches go to one sandbox executor per node of a Ray cluster.

The only module that imports ray. Each executor is a Ray actor pinned to its node that owns a
:class:`SandboxPool`; generated code runs in that pool's sandboxed helper processes, never inside the
Ray worker process itself. The driver keeps a few batches in flight per node, and appends each finished
batch to the output, so resume works exactly as with the local executor.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import JsonlAppender, write_stats
from lightning_selfalign.sandbox.batch import finished_under, limits_of, todo_rows
from lightning_selfalign.sandbox.types import Limits, Verdict

BATCH_ROWS = 64
IN_FLIGHT_PER_NODE = 2


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs ray: pip install 'lightning-selfalign[ray]'") from None
    return ray


class SandboxExecutor:
    """One per node: a warm sandbox pool that executes batches of rows (a Ray actor when remote)."""

    def __init__(self, workers: int, isolation: str, allow_unsafe: bool) -> None:
        from lightning_selfalign.sandbox.pool import SandboxPool

        self.pool = SandboxPool(workers=workers, isolation=isolation, allow_unsafe=allow_unsafe)

    def describe(self) -> dict[str, Any]:
        return {"isolation": self.pool.mode, "protections": self.pool.protections}

    def run_batch(self, rows: list[dict[str, Any]], limits: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows with their verdict fields; a timeout is retried once, alone, at the end of the batch."""
        limit = Limits(**limits)
        done, retry = [], []
        for row, result in self.pool.map(rows, limit, lambda r: (r["code"], r["tests"])):
            (retry if result.verdict == Verdict.TIMEOUT else done).append({**row, **result.row_fields()})
        for row in retry:
            done.append({**row, **self.pool.run(row["code"], row["tests"], limit).row_fields()})
        return done


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    while batch := list(islice(rows, BATCH_ROWS)):
        yield batch


def start_executors(ray, workers: int, isolation: str, allow_unsafe: bool) -> list:
    """One executor actor on every alive node (hard node affinity, no CPU reserved: helpers do the work)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_concurrency=1)(SandboxExecutor)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    return [
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            workers, isolation, allow_unsafe
        )
        for node in nodes
    ]


def execute_rows_ray(
    rows: Iterable[dict[str, Any]],
    output: str | Path,
    limits: Limits | None = None,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    address: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Like :func:`~lightning_selfalign.sandbox.batch.execute_rows`, on every node of a Ray cluster."""
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address or "auto", log_to_driver=False)
    limits = limits or Limits()
    started = time.monotonic()
    skipped: Counter = Counter()
    verdicts: Counter = Counter()
    executors = start_executors(ray, workers, isolation, allow_unsafe)
    described = ray.get(executors[0].describe.remote())
    batches = _batches(todo_rows(rows, finished_under(output, limits_of(limits)), skipped))
    pending: dict = {}
    bar = tqdm(desc="execute (ray)", unit="sample", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        with JsonlAppender(output) as out:
            for executor in executors * IN_FLIGHT_PER_NODE:
                _submit(executor, batches, pending, limits)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                executor = pending.pop(ready[0])
                for row in ray.get(ready[0]):
                    out.write({**row, "limits": limits_of(limits)})
                    verdicts[row["verdict"]] += 1
                    bar.update()
                bar.set_postfix(dict(verdicts.most_common()), refresh=False)
                _submit(executor, batches, pending, limits)
    finally:
        bar.close()
        for executor in executors:
            ray.kill(executor)
    seconds = time.monotonic() - started
    executed = sum(verdicts.values())
    stats = {
        "rows_executed": executed,
        "rows_out": executed,
        "skipped": dict(skipped),
        "verdicts": dict(verdicts),
        "executor": "ray",
        "nodes": len(executors),
        **described,
        "limits": vars(limits),
        "seconds": round(seconds, 3),
        "samples_per_s": round(executed / seconds, 1) if seconds > 0 else None,
    }
    write_stats(output, stats)
    return stats


def _submit(executor, batches: Iterator[list[dict]], pending: dict, limits: Limits) -> None:
    batch = next(batches, None)
    if batch:
        pending[executor.run_batch.remote(batch, asdict(limits))] = executor
