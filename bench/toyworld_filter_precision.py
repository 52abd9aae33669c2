"""How right is what the execution filter keeps? Ground truth for a code-world self-align run.

For every round of each workdir: the share of responses whose code is right (judged by the world's reference,
lightning_selfalign.toyworld.oracle, in the sandbox), among all executed responses, among those that passed their
own tests, and among the curated rows; right for the instruction the response answers, and right for the docstring
its code restates (the benchmark's own question: a body for the docstring above it); and the step counts of what
was curated (the benchmark's tasks have 4). The loop never sees this; it measures the filter.

    python bench/toyworld_filter_precision.py runs/ablation-s0/filtered runs/ablation-s0/unfiltered
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from lightning_selfalign.jsonl import read_jsonl
from lightning_selfalign.sandbox import SandboxPool
from lightning_selfalign.toyworld.oracle import judge_rows, stated_description


def share(judged: list[str]) -> str:
    parsable = [verdict for verdict in judged if verdict != "unparsable"]
    right = parsable.count("right")
    return f"{right / max(len(parsable), 1):6.1%} of {len(parsable):4d}"


def steps(row: dict) -> int | None:
    """Steps of the task the response's code states (its docstring), else of its instruction."""
    description = stated_description(row.get("code") or "") or stated_description(row.get("instruction") or "")
    return description.count(", then ") + 1 if description else None


def instruction_steps(row: dict) -> int | None:
    description = stated_description(row.get("instruction") or "")
    return description.count(", then ") + 1 if description else None


def against_own_docstring(row: dict) -> dict:
    """The row with its instruction replaced by the docstring its code restates (what the benchmark's format asks:
    a body for the docstring above it)."""
    return {**row, "instruction": f'"""{stated_description(row.get("code") or "") or ""}"""'}


def round_summary(round_dir: Path, pool: SandboxPool) -> dict:
    executed = list(read_jsonl(round_dir / "executed.jsonl"))
    curated_ids = {row["id"] for row in read_jsonl(round_dir / "sft.jsonl")}
    summary: dict = {"round": round_dir.name}
    for against, rows in (("instruction", executed), ("own docstring", [against_own_docstring(r) for r in executed])):
        judged = list(judge_rows(rows, pool))
        passed = [verdict for row, verdict in judged if row.get("verdict") == "pass"]
        curated = [verdict for row, verdict in judged if row["id"] in curated_ids]
        summary[f"right for {against}"] = {"all": share([v for _, v in judged]), "passed": share(passed),
                                           "curated": share(curated)}  # fmt: skip
    curated_rows = [row for row in executed if row["id"] in curated_ids]
    summary["instruction steps"] = dict(sorted(Counter(instruction_steps(row) for row in executed).items(), key=str))
    summary["curated steps"] = dict(sorted(Counter(steps(row) for row in curated_rows).items(), key=str))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    args = parser.parse_args()
    with SandboxPool(workers=2) as pool:
        for workdir in args.workdirs:
            for round_dir in sorted(workdir.glob("round-*")):
                if (round_dir / "sft.jsonl").exists():
                    print(workdir, json.dumps(round_summary(round_dir, pool)))


if __name__ == "__main__":
    main()
