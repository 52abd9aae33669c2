"""The issue's probe as a one-round control: the base's own responses to the world's seed-pool tasks, kept when right.

What self-generated data can teach at best, with the two things the loop cannot have taken out of the way: the
instructions are the world's (four-step seed-pool tasks, not ones the model wrote from concepts) and the filter is
the world's ground truth (``toyworld.oracle``), not the model's own tests. Fine-tuning the base on the kept rows
with the loop's training config measures that ceiling (BENCHMARKS.md, "Eleventh session"):

    python bench/toyworld_sharpening_rows.py instructions 480 pool-instructions.jsonl
    selfalign generate --stage responses --input pool-instructions.jsonl --output pool-responses.jsonl \\
        --engine hf --model models/toyworld-base --prompt_format selfalign-v1 --n 6 --temperature 0.7 --top_p 1.0 \\
        --max_new_tokens 448 --num_fewshot 0 --batch_size 128 --seed 0
    selfalign execute --input pool-responses.jsonl --output pool-executed.jsonl
    python bench/toyworld_sharpening_rows.py select pool-executed.jsonl sharpening.jsonl [--all]

then ``selfalign fit`` / ``export`` / ``evaluate`` as in ``bench/toyworld_perfect_rows.py``. ``select`` keeps one right
response per task (the first by id), or every right one with ``--all``, and prints how the model's own tests
judged what it kept and what it did not. A later round takes the next tasks (``instructions 400 FILE --start 480``)
and generates with the last round's model.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict

from lightning_selfalign.jsonl import read_jsonl, write_jsonl
from lightning_selfalign.sandbox import SandboxPool
from lightning_selfalign.toyworld import build_world
from lightning_selfalign.toyworld.documents import Noise, instruction_text
from lightning_selfalign.toyworld.oracle import judge_rows


def write_instructions(count: int, output: str, start: int = 0) -> None:
    rng, plain = random.Random(start), Noise(stub_instruction=0.0)
    rows = [
        {"id": f"pool-{index}", "category": "function", "difficulty": "hard",
         "instruction": instruction_text(task, rng, plain)}
        for index, (task, _) in enumerate(build_world().seed_pool[start : start + count], start)
    ]  # fmt: skip
    write_jsonl(output, rows)
    print(f"{len(rows)} instructions -> {output}")


def select_right(executed: str, output: str, keep_all: bool) -> None:
    rows = list(read_jsonl(executed))
    with SandboxPool(workers=2) as pool:
        truth = {row["id"]: verdict for row, verdict in judge_rows(rows, pool)}
    by_task = defaultdict(list)
    for row in sorted(rows, key=lambda row: row["id"]):
        by_task[row["parent_id"]].append(row)
    kept = []
    for samples in by_task.values():
        right = [row for row in samples if truth[row["id"]] == "right"]
        kept += right if keep_all else right[:1]
    fields = ("id", "instruction", "response")
    write_jsonl(output, [{field: row[field] for field in fields} for row in kept])
    own = Counter((truth[row["id"]] == "right", row.get("verdict") == "pass") for row in rows)
    right_per_task = Counter(sum(truth[row["id"]] == "right" for row in samples) for samples in by_task.values())
    print(f"{len(kept)} rows -> {output}; tasks by right samples: {sorted(right_per_task.items())}")
    print(f"own tests: right and pass {own[True, True]}, right and fail {own[True, False]}, "
          f"wrong and pass {own[False, True]}, wrong and fail {own[False, False]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    instructions = commands.add_parser("instructions", help="the first COUNT seed-pool tasks as instruction rows")
    instructions.add_argument("count", type=int)
    instructions.add_argument("output")
    instructions.add_argument("--start", type=int, default=0, help="the first seed-pool task to take")
    select = commands.add_parser("select", help="the right responses of executed rows, by the world's oracle")
    select.add_argument("executed")
    select.add_argument("output")
    select.add_argument("--all", action="store_true", help="every right response, not one per task")
    args = parser.parse_args()
    if args.command == "instructions":
        write_instructions(args.count, args.output, args.start)
    else:
        select_right(args.executed, args.output, args.all)


if __name__ == "__main__":
    main()
