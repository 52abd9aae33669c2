"""The world's three disjoint splits and the files the loop is pointed at.

- **corpus** (pretraining): chains of 1-3 steps, and a few of 4 steps (a share of the non-benchmark ones);
- **seed pool** (what self-alignment mines): chains of 4 steps;
- **benchmark** (held out, HumanEval format): chains of 4 steps whose *composition* (the sequence of operations,
  constants aside) occurs nowhere else: not in the seed pool, not in the corpus.

Why this measures generalisation: the base model has seen every operation, in chains of up to three, and only a
few chains of four (enough to know they exist, too few to master them); the loop meets four-step functions through
the seeds it mines and the data it writes itself, never a benchmark composition. A gain on the benchmark is
composing known steps in unseen orders at a length the base has not mastered, not recalling a seen task. Where a
task goes is fixed by hashes of its composition (benchmark or not) and of its steps and constants (corpus or seed
pool), so the split does not depend on the seed or on how many tasks are drawn.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from lightning_selfalign.jsonl import stable_id, write_jsonl
from lightning_selfalign.toyworld.tasks import Task, check_source, draw_task

CORPUS_LENGTHS = (1, 2, 2, 3, 3, 3)
# Of the 4-step tasks outside the benchmark's compositions, 1 in CORPUS_SHARE_OF_LONG goes to the corpus, where
# they make at most 1 in CORPUS_LONG_CAP of its tasks.
CORPUS_SHARE_OF_LONG = 3
CORPUS_LONG_CAP = 8
HELD_OUT_LENGTH = 4
SEED_FILE_FUNCTIONS = 100


@dataclass
class World:
    """Tasks with their reference cases, per split."""

    corpus: list[tuple[Task, list]]
    seed_pool: list[tuple[Task, list]]
    benchmark: list[tuple[Task, list]]
    seed: int


def split_of(task: Task) -> str:
    """``corpus``, ``seed_pool`` or ``benchmark``: fixed by the task's length and composition."""
    if len(task.steps) < HELD_OUT_LENGTH:
        return "corpus"
    if int(stable_id("toyworld-split", *task.composition), 16) % 3 == 0:
        return "benchmark"
    return "corpus" if int(stable_id("toyworld-pool", repr(task.key)), 16) % CORPUS_SHARE_OF_LONG == 0 else "seed_pool"


def build_world(seed: int = 0, corpus: int = 8000, seed_pool: int = 1200, benchmark: int = 240) -> World:
    """Draw tasks until each split has its count; a task drawn twice (same steps and constants) counts once, and
    benchmark tasks have distinct compositions."""
    rng = random.Random(seed)
    wanted = {"corpus": corpus, "seed_pool": seed_pool, "benchmark": benchmark}
    found: dict[str, list] = {name: [] for name in wanted}
    seen: set = set()
    long_in_corpus = 0
    while any(len(found[name]) < count for name, count in wanted.items()):
        need_short = len(found["corpus"]) < corpus
        length = rng.choice(CORPUS_LENGTHS) if need_short and rng.random() < 0.5 else HELD_OUT_LENGTH
        drawn = draw_task(length, rng)
        if drawn is None:
            continue
        task, cases = drawn
        split = split_of(task)
        identity = task.composition if split == "benchmark" else task.key
        if identity in seen or len(found[split]) >= wanted[split]:
            continue
        if split == "corpus" and length == HELD_OUT_LENGTH:
            if long_in_corpus >= corpus // CORPUS_LONG_CAP:
                continue
            long_in_corpus += 1
        seen.add(identity)
        found[split].append((task, cases))
    return World(found["corpus"], found["seed_pool"], found["benchmark"], seed)


def benchmark_rows(world: World) -> list[dict]:
    return [
        {"task_id": f"ToyWorld/{index}", "prompt": task.prompt(), "entry_point": task.name,
         "test": check_source(task, cases), "composition": list(task.composition)}
        for index, (task, cases) in enumerate(world.benchmark)
    ]  # fmt: skip


def seed_pool_files(world: World) -> dict[str, str]:
    """The seed pool as Python modules (what ``selfalign seeds`` mines), ``SEED_FILE_FUNCTIONS`` functions each."""
    files = {}
    for start in range(0, len(world.seed_pool), SEED_FILE_FUNCTIONS):
        chunk = world.seed_pool[start : start + SEED_FILE_FUNCTIONS]
        body = "\n\n\n".join(task.code() for task, _ in chunk)
        files[f"functions_{start // SEED_FILE_FUNCTIONS:03d}.py"] = f'"""Toy world functions."""\n\n\n{body}\n'
    return files


def corpus_rows(world: World) -> list[dict]:
    return [
        {"name": task.name, "code": task.code(), "concepts": task.concepts(), "composition": list(task.composition),
         "cases": [[repr(argument), repr(output)] for argument, output in cases]}
        for task, cases in world.corpus
    ]  # fmt: skip


def write_world(output_dir: str | Path, world: World) -> dict:
    """``benchmark.jsonl``, ``seed-pool/*.py``, ``corpus.jsonl`` and ``world.json`` (counts and the split rule)."""
    root = Path(output_dir)
    (root / "seed-pool").mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "benchmark.jsonl", benchmark_rows(world))
    write_jsonl(root / "corpus.jsonl", corpus_rows(world))
    for name, text in seed_pool_files(world).items():
        (root / "seed-pool" / name).write_text(text, encoding="utf-8")
    facts = {
        "seed": world.seed,
        "counts": {"corpus": len(world.corpus), "seed_pool": len(world.seed_pool), "benchmark": len(world.benchmark)},
        "split": "corpus: 1-3 steps and a third of the non-benchmark 4-step tasks (by a hash of steps and constants); "
        "seed_pool: the other non-benchmark 4-step tasks; benchmark: 4-step tasks of the compositions a hash sends "
        "there (1 in 3), each composition once",
    }
    (root / "world.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return facts


def toyworld_command(*, output_dir: str = "toyworld", seed: int = 0, corpus: int = 8000, seed_pool: int = 1200,
                     benchmark: int = 240) -> dict:  # fmt: skip
    """Write the code world's files: the held-out benchmark, the seed pool the loop mines, the pretraining corpus.

    Args:
        output_dir: folder to write: benchmark.jsonl (HumanEval format, for evaluate --benchmark_file),
            seed-pool/*.py (for self-align --seeds.source or selfalign seeds --source), corpus.jsonl (the tasks the
            base model is pretrained on, for inspection) and world.json (counts and the split rule).
        seed: the world's seed; the base model from selfalign tiny-model --pretrain toyworld uses the same one.
        corpus: tasks of 1-3 steps in the pretraining corpus.
        seed_pool: tasks of 4 steps in the seed pool.
        benchmark: tasks of 4 steps, compositions disjoint from the seed pool's, in the held-out benchmark.
    """
    from lightning_selfalign.errors import UserError

    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise UserError(f"--output_dir {output_dir} is a file; name a folder")
    if min(corpus, seed_pool, benchmark) < 1:
        raise UserError("--corpus, --seed_pool and --benchmark must each be at least 1")
    facts = write_world(output_dir, build_world(seed, corpus, seed_pool, benchmark))
    counts = facts["counts"]
    print(f"toyworld: {counts['corpus']} corpus, {counts['seed_pool']} seed-pool, {counts['benchmark']} benchmark "
          f"tasks -> {output_dir}")  # fmt: skip
    return facts
