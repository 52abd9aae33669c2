"""Sharded data rounds: several processes (one per rank) each write the seeds, generated and executed rows of their
shard of a round (seeds split by id hash), then one process merges the shards into the round's own files, in the
order one process writes them, so everything after (curation, training) reads the same bytes as after a one-process
round.

A one-process stage writes its rows in input order, a row's samples in sample-index order, and a resumed stage
goes on in that order; so each shard's file is in that order too, restricted to its rows, and the merge is a
streaming merge on (the parent's row in the merged previous stage, sample index). Executed rows come back from the
sandbox in completion order: :func:`order_like_responses` puts them in their responses' order, in a shard and in a
one-process round alike.

Each shard records its progress in a file of its own (:func:`shard_state`); ``state.json`` is rewritten whole on
every change, so processes working at once must not share it. Only the merge records in ``state.json``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl, write_jsonl, write_stats
from lightning_selfalign.rounds.state import SHARDED, RoundPaths, RoundState

# The stage a stage's rows come from (their ``parent_id``; executed rows are their responses themselves), parents
# first: the order the merge goes in, each stage's order taken from its merged parent.
PARENT = {"concepts": "seeds", "instructions": "concepts", "responses": "instructions", "executed": "responses"}


def shard_state(workdir: Path, round: int, shard: tuple[int, int]) -> RoundState:
    """Where ``shard``'s progress is recorded: ``state.json`` for one process, else ``round-<r>/state.shard-0000i-of-
    0000n.json``."""
    if shard == (0, 1):
        return RoundState(workdir)
    return RoundState(RoundPaths(workdir, round).dir, f"state.shard-{shard[0]:05d}-of-{shard[1]:05d}.json")


def begun_shards(workdir: Path, round: int) -> int:
    """The shard count of a sharded round that was begun (its shards' state files are there), else 1."""
    folder = RoundPaths(workdir, round).dir
    counts = {int(path.name.split("-of-")[1].split(".")[0]) for path in folder.glob("state.shard-*-of-*.json")}
    if len(counts) > 1:
        raise UserError(f"{folder}: shards of {sorted(counts)} were begun; keep the state.shard-* files of one shard "
                        "count, and delete the round's *.shard-* files of the others")  # fmt: skip
    return counts.pop() if counts else 1


def unfinished_shards(workdir: Path, round: int, shards: int) -> list[str]:
    """The shards (``i/n``) whose rows are not all written and executed yet."""
    states = [shard_state(workdir, round, (index, shards)) for index in range(shards)]
    return [f"{index}/{shards}" for index, state in enumerate(states) if not state.reached(round, "executed")]


def row_order(stage: str, parents: Path) -> Callable[[dict[str, Any]], tuple]:
    """The sort key of ``stage``'s rows in one process's order, given the merged file of their parent stage."""
    position = {str(row["id"]): index for index, row in enumerate(read_jsonl(parents, allow_empty=True))}
    if stage == "executed":
        return lambda row: (position[str(row["id"])],)
    return lambda row: (position[str(row["parent_id"])], row["sample_index"])


def order_like_responses(paths: RoundPaths) -> int:
    """Rewrite ``paths.executed`` (completion order) in the order of ``paths.responses``; returns its rows."""
    if not paths.executed.exists():  # nothing was executed, nothing written
        return 0
    key = row_order("executed", paths.responses)
    return write_jsonl(paths.executed, sorted(read_jsonl(paths.executed, allow_empty=True), key=key))


def merge_stage(stage: str, workdir: Path, round: int, shards: int) -> int:
    """Round ``round``'s ``stage`` file from its ``shards`` shards' files, in one process's order (generation stages:
    their dropped samples too, and the counts beside them). Returns the rows merged."""
    from lightning_selfalign.stages import dropped_path, stage_totals

    assert stage in SHARDED and stage != "seeds", f"{stage}: only generated and executed rows are merged"
    merged, parts = RoundPaths(workdir, round), [RoundPaths(workdir, round, (i, shards)) for i in range(shards)]
    key = row_order(stage, getattr(merged, PARENT[stage]))
    output = getattr(merged, stage)
    rows = merge_files([getattr(part, stage) for part in parts], output, key)
    if stage == "executed":
        verdicts = Counter(row["verdict"] for row in read_jsonl(output, allow_empty=True))
        write_stats(output, {"shards": shards, "rows_out": rows, "verdicts": dict(verdicts)})
        return rows
    dropped = [dropped_path(getattr(part, stage)) for part in parts]
    if any(path.exists() for path in dropped):  # as in one process: written once the stage had input rows
        merge_files(dropped, dropped_path(output), key)
        write_stats(output, {"stage": stage, "shards": shards, "totals": stage_totals(output, dropped_path(output))})
    return rows


def merge_files(sources: list[Path], output: Path, key: Callable[[dict[str, Any]], tuple]) -> int:
    """Rows of ``sources`` (each already in ``key`` order; absent ones are empty) merged into ``output``."""
    streams = [read_jsonl(path, allow_empty=True) for path in sources if path.exists()]
    return write_jsonl(output, _ascending(heapq.merge(*streams, key=key), key, output))


def _ascending(rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], tuple], output: Path) -> Iterator[dict]:
    last = None
    for row in rows:
        current = key(row)
        if last is not None and current <= last:  # a shard file edited or mixed with another round's
            raise UserError(f"{output}: shard rows out of one process's order at {row.get('id')}; delete the round's "
                            "shard files and rerun the round")  # fmt: skip
        last = current
        yield row
