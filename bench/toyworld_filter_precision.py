"""How right is what the execution filter keeps? Ground truth for a code-world self-align run.

For every round of each workdir: the share of responses whose code is right for the instruction it answers
(judged by the world's reference, lightning_selfalign.toyworld.oracle, in the sandbox), among all executed
responses, among those that passed their own tests, and among the curated rows; and the step counts of what
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
    description = stated_description(row.get("code") or "")
    return description.count(", then ") + 1 if description else None


def round_summary(round_dir: Path, pool: SandboxPool) -> dict:
    executed = list(read_jsonl(round_dir / "executed.jsonl"))
    curated_ids = {row["id"] for row in read_jsonl(round_dir / "sft.jsonl")}
    judged = list(judge_rows(executed, pool))
    passed = [verdict for row, verdict in judged if row.get("verdict") == "pass"]
    curated = [(row, verdict) for row, verdict in judged if row["id"] in curated_ids]
    return {
        "round": round_dir.name,
        "right/all": share([verdict for _, verdict in judged]),
        "right/passed": share(passed),
        "right/curated": share([verdict for _, verdict in curated]),
        "curated steps": dict(sorted(Counter(steps(row) for row, _ in curated).items(), key=str)),
    }


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
