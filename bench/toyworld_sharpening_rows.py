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

The same control without the responses stage (the model writes the body under the given signature and docstring, as
in the evaluation; BENCHMARKS.md, "Twelfth session"):

    python bench/toyworld_sharpening_rows.py benchmark 240 pool-bench.jsonl
    selfalign evaluate --model models/toyworld-base --benchmark_file pool-bench.jsonl --chat true --n 6 \\
        --temperature 0.7 --top_p 1.0 --max_new_tokens 192 --output pool-bench.json
    python bench/toyworld_sharpening_rows.py select-samples pool-bench.samples.jsonl pool-bench.executions.jsonl \\
        body-rows.jsonl [--all]

``select-samples`` keeps the samples that pass the task's reference tests and that the oracle finds right, written as
rows in the response format (the given docstring, the sampled body, no tests).

The same at volume, with the unfiltered arm and a held-in score (BENCHMARKS.md, "Thirteenth session"): 240 seed-pool
tasks that no round of the Quick start mines are held in; the other 960 are sampled six times each:

    python bench/toyworld_sharpening_rows.py held-in 240 held-in.jsonl
    python bench/toyworld_sharpening_rows.py benchmark 1200 pool-960.jsonl --exclude held-in.jsonl
    selfalign evaluate --model models/toyworld-base --benchmark_file pool-960.jsonl --chat true --n 6 \\
        --temperature 0.7 --top_p 1.0 --max_new_tokens 192 --output pool-960.json
    python bench/toyworld_sharpening_rows.py select-samples pool-960.samples.jsonl pool-960.executions.jsonl \\
        filtered.jsonl --all
    python bench/toyworld_sharpening_rows.py select-samples pool-960.samples.jsonl pool-960.executions.jsonl \\
        unfiltered.jsonl --unfiltered 1099

``--unfiltered N`` draws N samples at random with no filter at all (the ablation's other arm, as many rows as the
filtered one kept); ``--tests_only`` keeps what passes the reference tests without asking the oracle (the issue's
probe's filter); ``--grounded`` keeps, with neither, every sample whose body states each constant its docstring
states (the one check of the model's own that teaches it, BENCHMARKS.md). A later round samples the same 960
tasks with the last round's model (``--model`` of ``evaluate``) and fine-tunes that model further
(``--model.model_name_or_path`` of ``fit``).
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from lightning_selfalign.jsonl import read_jsonl, write_jsonl
from lightning_selfalign.prompts import Parts, get_format
from lightning_selfalign.sandbox import SandboxPool
from lightning_selfalign.toyworld import build_world
from lightning_selfalign.toyworld.documents import PROMPT_FORMAT, REASONING, Noise, instruction_text
from lightning_selfalign.toyworld.oracle import judge_rows
from lightning_selfalign.toyworld.tasks import Task, check_source

# A constant as a description states it: a quoted string or an integer.
CONSTANT = re.compile(r"'[^']*'|-?\d+")
# The Quick start's config: its seeds stage mines the first rounds x seeds.per_round functions of the seed pool,
# whatever the generation seed.
QUICK_START = Path(__file__).resolve().parent.parent / "configs" / "self-align-toyworld-cpu.yaml"


def mined_by_quick_start() -> int:
    config = yaml.safe_load(QUICK_START.read_text())
    return config["rounds"] * config["seeds"]["per_round"]


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


def write_benchmark(count: int, output: str, start: int = 0, exclude: str | None = None) -> None:
    """Seed-pool tasks as HumanEval-format rows, skipping the entry points ``exclude`` (a benchmark file) names."""
    excluded = {row["entry_point"] for row in read_jsonl(exclude)} if exclude else set()
    rows = [
        benchmark_row(index, task, cases)
        for index, (task, cases) in enumerate(build_world().seed_pool[start : start + count], start)
        if task.name not in excluded
    ]
    write_jsonl(output, rows)
    print(f"{len(rows)} benchmark rows -> {output}")


def write_held_in(count: int, output: str) -> None:
    """The first ``count`` seed-pool tasks that no round of the Quick start mines: tasks after the ones its seeds
    stage takes, under another name."""
    pool, first = build_world().seed_pool, mined_by_quick_start()
    mined = {task.name for task, _ in pool[:first]}
    rows = [benchmark_row(index, task, cases) for index, (task, cases) in enumerate(pool[first:], first)
            if task.name not in mined][:count]  # fmt: skip
    write_jsonl(output, rows)
    print(f"{len(rows)} held-in rows -> {output}")


def benchmark_row(index: int, task: Task, cases: list) -> dict:
    """Seed-pool task ``index`` in HumanEval format; ``select-samples`` reads the index back from its task_id."""
    return {"task_id": f"Pool/{index}", "prompt": task.prompt(), "entry_point": task.name,
            "test": check_source(task, cases)}  # fmt: skip


def select_samples(samples: str, executions: str, output: str, keep_all: bool, oracle: bool = True) -> None:
    pool_tasks = build_world().seed_pool
    passed = {row["sample_id"] for row in read_jsonl(executions) if row["verdict"] == "pass"}
    rng, candidates = random.Random(0), []
    for sample in read_jsonl(samples):
        if sample["id"] in passed:
            task, code = task_and_code(pool_tasks, sample)
            candidates.append({"id": sample["id"], "task_id": sample["task_id"],
                               "instruction": instruction_text(task, rng, Noise(stub_instruction=0.0)),
                               "code": code})  # fmt: skip
    right = candidates
    if oracle:
        with SandboxPool(workers=2) as pool:
            right = [row for row, verdict in judge_rows(candidates, pool) if verdict == "right"]
    by_task = defaultdict(list)
    for row in right:
        by_task[row["task_id"]].append(row)
    kept = [row for rows in by_task.values() for row in (rows if keep_all else [rng.choice(rows)])]
    write_jsonl(output, [body_row(row["id"], row["instruction"], row["code"], rng.choice(REASONING)) for row in kept])
    judged = "right" if oracle else "kept"
    print(f"{len(right)} {judged} of {len(candidates)} passing ({len(by_task)} tasks): {len(kept)} rows -> {output}")


def draw_samples(samples: str, output: str, count: int | None = None, grounded: bool = False) -> None:
    """Evaluation samples kept without the world's tests or oracle: ``count`` drawn at random, right or wrong (the
    unfiltered arm of the same volume), or, ``grounded``, every sample whose body states each constant its docstring
    states (a quoted string or a number), a check that needs nothing but the sample itself."""
    pool_tasks, rng = build_world().seed_pool, random.Random(0)
    drawn = list(read_jsonl(samples))
    if count is not None:
        rng.shuffle(drawn)
        drawn = drawn[:count]
    rows = []
    for sample in drawn:
        task, code = task_and_code(pool_tasks, sample)
        if grounded and not all(constant in sample["completion"] for constant in CONSTANT.findall(task.description())):
            continue
        reasoning = rng.choice(REASONING)
        instruction = instruction_text(task, rng, Noise(stub_instruction=0.0))
        rows.append(body_row(sample["id"], instruction, code, reasoning))
    write_jsonl(output, rows)
    print(f"{len(rows)} samples, {'grounded' if grounded else 'unfiltered'} -> {output}")


def task_and_code(pool_tasks: list, sample: dict) -> tuple[Task, str]:
    """The seed-pool task an evaluation sample answers (its task_id is Pool/<index>) and the sample's whole function."""
    task = pool_tasks[int(sample["task_id"].split("/")[1])][0]
    return task, task.prompt() + sample["completion"].lstrip("\n")


def body_row(row_id: str, instruction: str, code: str, reasoning: str) -> dict:
    """A training row in the response format: reasoning and the code (given docstring, sampled body), no tests."""
    response = get_format(PROMPT_FORMAT).render_response(Parts(reasoning, code.rstrip(), "", ""))
    return {"id": row_id, "instruction": instruction, "response": response.split("\n\nTests:")[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("instructions", "the first COUNT seed-pool tasks as instruction rows"),
                            ("benchmark", "the first COUNT seed-pool tasks as HumanEval-format rows")):  # fmt: skip
        tasks = commands.add_parser(name, help=help_text)
        tasks.add_argument("count", type=int)
        tasks.add_argument("output")
        tasks.add_argument("--start", type=int, default=0, help="the first seed-pool task to take")
        if name == "benchmark":
            tasks.add_argument("--exclude", help="a benchmark file whose entry points to leave out")
    held_in = commands.add_parser("held-in", help="COUNT seed-pool tasks that no round of the Quick start mines")
    held_in.add_argument("count", type=int)
    held_in.add_argument("output")
    select = commands.add_parser("select", help="the right responses of executed rows, by the world's oracle")
    select.add_argument("executed")
    samples = commands.add_parser("select-samples", help="evaluation samples right by the reference tests and oracle")
    samples.add_argument("samples")
    samples.add_argument("executions")
    for selection in (select, samples):
        selection.add_argument("output")
        selection.add_argument("--all", action="store_true", help="every right row, not one per task")
    samples.add_argument("--unfiltered", type=int, metavar="N", help="N samples at random, no filter at all")
    samples.add_argument("--tests_only", action="store_true", help="kept when they pass the reference tests alone")
    samples.add_argument("--grounded", action="store_true", help="kept when the body states every constant the "
                         "docstring states; no tests, no oracle")  # fmt: skip
    args = parser.parse_args()
    if args.command == "instructions":
        write_instructions(args.count, args.output, args.start)
    elif args.command == "benchmark":
        write_benchmark(args.count, args.output, args.start, args.exclude)
    elif args.command == "held-in":
        write_held_in(args.count, args.output)
    elif args.command == "select-samples" and (args.unfiltered is not None or args.grounded):
        draw_samples(args.samples, args.output, count=args.unfiltered, grounded=args.grounded)
    elif args.command == "select-samples":
        select_samples(args.samples, args.executions, args.output, args.all, oracle=not args.tests_only)
    else:
        select_right(args.executed, args.output, args.all)


if __name__ == "__main__":
    main()
