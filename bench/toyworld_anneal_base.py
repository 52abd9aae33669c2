"""A second pretraining phase for the committed base: more steps on fresh corpus-split tasks (new constants).

The committed base (v1) misreads constants: on fresh one-step tasks it writes ``s + 'n'`` for "append 't'" about
half the time. This continues its pretraining on tasks it has never seen, drawn as the world draws its corpus (one to
three steps, and a share of four-step ones only where ``split_of`` puts them in the corpus and they are not a
seed-pool or benchmark task), rendered by the same ``task_documents`` with the same noise. Not committed: the
candidates it made are measured in BENCHMARKS.md, "Eleventh session".

    python bench/toyworld_anneal_base.py --output_dir models/toyworld-v1a --long_share 0.0    # v1a
    python bench/toyworld_anneal_base.py --output_dir models/toyworld-v1b --long_share 0.25   # v1b
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from lightning_selfalign.toyworld.documents import Noise, task_documents
from lightning_selfalign.toyworld.pretrain import pretrain_model
from lightning_selfalign.toyworld.tasks import draw_task
from lightning_selfalign.toyworld.world import CORPUS_LENGTHS, HELD_OUT_LENGTH, split_of


def fresh_documents(tasks: int, long_share: float, seed: int) -> list[str]:
    """Documents of ``tasks`` distinct new tasks; ``split_of`` alone keeps out every seed-pool and benchmark task."""
    rng, seen, documents = random.Random(seed), set(), []
    while len(seen) < tasks:
        length = HELD_OUT_LENGTH if rng.random() < long_share else rng.choice(CORPUS_LENGTHS)
        drawn = draw_task(length, rng)
        if drawn is None or drawn[0].key in seen or split_of(drawn[0]) != "corpus":
            continue
        seen.add(drawn[0].key)
        documents += task_documents(drawn[0], drawn[1], rng, Noise())
    rng.shuffle(documents)
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="models/toyworld-base")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tasks", type=int, default=8000)
    parser.add_argument("--long_share", type=float, default=0.0, help="share of four-step tasks drawn")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--peak_lr", type=float, default=1e-3)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.base)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    documents = fresh_documents(args.tasks, args.long_share, seed=777)
    facts = pretrain_model(model, tokenizer, documents, Path(args.output_dir), steps=args.steps, seed=1,
                           peak_lr=args.peak_lr, progress=False)  # fmt: skip
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"{facts['steps']} steps on {facts['documents']} documents ({facts['tokens']} tokens), "
          f"{facts['seconds']} s -> {args.output_dir}")  # fmt: skip


if __name__ == "__main__":
    main()
