"""pass@1 by round for rounds made outside the loop (the volume recipe of ``toyworld_sharpening_rows.py``), drawn by
the report's own ``draw_pass_at_1`` so it reads like the loop's report (BENCHMARKS.md, "Thirteenth session"):

    python bench/toyworld_rounds_picture.py --output docs/images/toyworld-probe-rounds.png \\
        --title "benchmark pass@1: v1's own answers, the world's tests as filter" \\
        --arm "filtered (reference tests + oracle)" base.json r1/eval.json r2/eval.json r3/eval.json \\
        --arm "unfiltered (as many, at random)" base.json u1/eval.json u2/eval.json u3/eval.json

Each ``--arm`` is a label, then the ``selfalign evaluate`` output of the base model, then one per round (round 0 is
the first fine-tune, as in the loop).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightning_selfalign.report.collect import Arm, RoundData
from lightning_selfalign.report.plots import DPI, draw_pass_at_1, new_figure


def arm_of(label: str, evaluations: list[str]) -> Arm:
    base, *rounds = (json.loads(Path(path).read_text())["pass@1"] for path in evaluations)
    arm = Arm(label=label, workdir=Path(evaluations[0]).parent, base_pass_at_1=base)
    arm.rounds = [RoundData(round=index, stage="evaluated", pass_at_1=score) for index, score in enumerate(rounds)]
    return arm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", nargs="+", action="append", required=True, metavar="LABEL_THEN_FILES")
    parser.add_argument("--title", default="pass@1 by round, the volume recipe (base model = round -1)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    figure = new_figure()
    draw_pass_at_1(figure, [arm_of(label, files) for label, *files in args.arm])
    figure.axes[0].set_title(args.title)
    figure.savefig(args.output, dpi=DPI)
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
