"""Training rows that are right by construction: the control for what the loop's curated rows could teach.

Writes N seed-pool tasks as (instruction, response) rows in the pipeline's response format, with the reference
solution and reference-computed tests, no noise. Fine-tuning the base on them with the loop's own training config
measures what N right four-step rows are worth (BENCHMARKS.md, "Why the filter does not lift the benchmark"):

    python bench/toyworld_perfect_rows.py 150 perfect.jsonl
    selfalign fit --config configs/toyworld-cpu.yaml --data.train_files '[perfect.jsonl]' --trainer.max_epochs 2 \\
        --trainer.enable_checkpointing true --trainer.default_root_dir runs/perfect
    selfalign export --ckpt_path runs/perfect/lightning_logs/version_0/checkpoints/*.ckpt \\
        --output_dir runs/perfect/model
    selfalign evaluate --model runs/perfect/model --benchmark_file toyworld/benchmark.jsonl --chat true \\
        --max_new_tokens 192 --output runs/perfect/eval.json
"""

from __future__ import annotations

import argparse
import random

from lightning_selfalign.jsonl import write_jsonl
from lightning_selfalign.toyworld import build_world
from lightning_selfalign.toyworld.documents import Noise, instruction_text, response_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("output")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng, clean = random.Random(args.seed), Noise(wrong_code=0.0, wrong_tests=0.0)
    rows = [
        {"id": f"perfect-{index}", "instruction": instruction_text(task, rng, clean),
         "response": response_text(task, cases, rng, clean)}
        for index, (task, cases) in enumerate(build_world().seed_pool[: args.count])
    ]  # fmt: skip
    write_jsonl(args.output, rows)
    print(f"{len(rows)} rows -> {args.output}")


if __name__ == "__main__":
    main()
