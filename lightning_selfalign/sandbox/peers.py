"""Peer tests: each passing response's code run against the tests its sibling responses wrote.

The execution filter keeps a response whose code passes its *own* tests. A small model's tests often restate its
code's mistake (a misread constant, a dropped step, in both), so passing one's own tests says less than it seems.
Responses to the same instruction (same ``parent_id``, the ``n`` samples of one prompt) were written apart; a code
that also passes tests another sample wrote agrees with an independent reading of the instruction. This is CodeT's
dual-agreement idea (Chen et al., 2022) reduced to what curation needs: per passing row, how many distinct sibling
test sets ran against its code (``peer_tests``) and how many of them passed (``peer_passes``). Curation reads them
(``--min_peer_passes``, ``--select peer_agreement``). Neither reference does this; it is off unless asked for.

Rows are written group by group, in input order, flushed; a rerun skips the instructions already written.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import JsonlAppender, finished_ids, read_jsonl, refuse_output_among_inputs, write_stats
from lightning_selfalign.options import ExecutionOptions
from lightning_selfalign.records import VERDICT_PASS
from lightning_selfalign.sandbox.pool import SandboxPool
from lightning_selfalign.sandbox.types import Limits

Pair = tuple[int, int, int]  # (group, row within it, sibling whose tests run)


def group_rows(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by ``parent_id`` (rows without one stand alone), groups in order of their first row."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for index, row in enumerate(rows):
        parent = row.get("parent_id")
        groups[f"parent:{parent}" if parent is not None else f"row:{index}"].append(row)
    return list(groups.values())


def peer_pairs(group: list[dict[str, Any]], number: int) -> list[Pair]:
    """(group, i, j) for each passing row i and each sibling j whose tests are a distinct text, not i's own."""
    pairs = []
    for i, row in enumerate(group):
        if row.get("verdict") != VERDICT_PASS or not row.get("code"):
            continue
        seen = {(row.get("tests") or "").strip()}
        for j, sibling in enumerate(group):
            tests = (sibling.get("tests") or "").strip()
            if j != i and tests and tests not in seen:
                seen.add(tests)
                pairs.append((number, i, j))
    return pairs


def peer_check_rows(
    rows: list[dict[str, Any]], output: str | Path, pool: SandboxPool, limits: Limits, progress: bool = True
) -> dict[str, Any]:
    """Append ``rows`` to ``output`` with ``peer_tests`` and ``peer_passes`` set, skipping groups already there."""
    done = finished_ids(output)
    groups = [group for group in group_rows(rows) if not all(str(row["id"]) in done for row in group)]
    pairs = [pair for number, group in enumerate(groups) for pair in peer_pairs(group, number)]
    waiting = [0] * len(groups)
    for number, _, _ in pairs:
        waiting[number] += 1
    counts = [[{"peer_tests": 0, "peer_passes": 0} for _ in group] for group in groups]
    next_group = 0
    with JsonlAppender(output) as out:

        def flush_ready() -> None:  # groups in input order, each once all its pairs have answered
            nonlocal next_group
            while next_group < len(groups) and waiting[next_group] == 0:
                out.write_all({**row, **peer} for row, peer in zip(groups[next_group], counts[next_group])
                              if str(row["id"]) not in done)  # fmt: skip
                next_group += 1

        def sample(pair: Pair) -> tuple[str, str]:  # row i's code with sibling j's tests
            number, i, j = pair
            return groups[number][i]["code"], groups[number][j]["tests"]

        flush_ready()
        answers = tqdm(pool.map(pairs, limits, sample), total=len(pairs), desc="peer tests", unit="run",
                       disable=not progress)  # fmt: skip
        for (number, i, _), result in answers:
            counts[number][i]["peer_tests"] += 1
            counts[number][i]["peer_passes"] += int(result.passed)
            waiting[number] -= 1
            flush_ready()
        flush_ready()
    agreeing = sum(peer["peer_passes"] > 0 for group in counts for peer in group)
    return {"rows_written": out.written, "groups": len(groups), "peer_runs": len(pairs),
            "rows_with_a_peer_pass": agreeing,
            "skipped_already_done": len(rows) - sum(len(group) for group in groups)}  # fmt: skip


def peer_check_file(
    input: str | Path, output: str | Path, execution: ExecutionOptions, progress: bool = True
) -> dict[str, Any]:
    """:func:`peer_check_rows` over an executed JSONL file (``id``, ``code``, ``tests``, ``verdict``) in this machine's
    sandbox under ``execution``'s limits; writes the stats beside ``output``."""
    problems = execution.problems()
    if problems:
        raise UserError("; ".join(problems))
    refuse_output_among_inputs(input, output)
    rows = list(read_jsonl(input, required=["id", "verdict"], allow_empty=True))
    with SandboxPool(execution.workers, execution.isolation, execution.allow_unsafe) as pool:
        stats = peer_check_rows(rows, output, pool, execution.limits(), progress)
    write_stats(output, stats)
    return stats


def peer_check_command(
    input: str, output: str, execution: ExecutionOptions | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run each passing response's code against its sibling responses' tests (same parent_id) and write the rows
    with peer_tests and peer_passes, for curate's --min_peer_passes and --select peer_agreement.

    Args:
        input: executed JSONL (selfalign execute's output: id, parent_id, code, tests, verdict).
        output: JSONL to append to; rerunning resumes, skipping instructions already written.
        execution: the sandbox's limits, as selfalign execute's flags: --execution.timeout, --execution.memory,
            --execution.workers, --execution.isolation, --execution.policy (runs on this machine).
        progress: show a progress bar.
    """
    stats = peer_check_file(input, output, execution or ExecutionOptions(), progress)
    print(f"peer-check: {input} -> {output}: {stats['peer_runs']} runs over {stats['groups']} instructions; "
          f"{stats['rows_with_a_peer_pass']} rows passed a sibling's tests")  # fmt: skip
    return stats
