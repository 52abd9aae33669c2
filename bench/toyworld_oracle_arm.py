"""The ceiling of any execution filter on the code world: the loop with its verdicts replaced by the world's.

Runs ``selfalign self-align`` with one change: once a round's responses are executed (against their own tests, as
always), each executed row's verdict becomes ``pass`` when the world's reference
(:mod:`lightning_selfalign.toyworld.oracle`) finds the code right for its instruction, ``fail`` otherwise (the own
verdict is kept as ``own_verdict``). Curation, training, export and evaluation then run unchanged. This is the
issue's probe (rows filtered by the tasks' reference tests) inside the real loop: no filter the loop could have
keeps more right rows or fewer wrong ones, so what this arm gains bounds what the loop's own filter can gain on
that base at that scale.

The loop never imports the oracle. This script puts a ``sitecustomize`` on ``PYTHONPATH`` that wraps
``lightning_selfalign.rounds.data_round.execute_round`` in every process the loop starts (its between-rounds
worker too); nothing in the package changes.

    python bench/toyworld_oracle_arm.py instruction -- --config configs/self-align-toyworld-cpu.yaml \
        --workdir runs/oracle-s0

``instruction``: right for the instruction (the issue's probe). ``both``: also right for the docstring the
response's code restates, which is what the benchmark asks of a body (given a docstring, write what it says).
Everything after ``--`` goes to ``selfalign self-align``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SITECUSTOMIZE = '''
import os

if os.environ.get("SELFALIGN_ORACLE_ARM") in ("instruction", "both"):
    from lightning_selfalign.rounds import data_round

    BOTH = os.environ["SELFALIGN_ORACLE_ARM"] == "both"

    def _oracle_verdicts(execute_round):
        def run(paths, settings):
            from lightning_selfalign.jsonl import read_jsonl, write_jsonl
            from lightning_selfalign.sandbox import SandboxPool
            from lightning_selfalign.toyworld.oracle import judge_rows, stated_description

            count = execute_round(paths, settings)
            rows = list(read_jsonl(paths.executed, allow_empty=True))
            with SandboxPool(workers=settings.execution.workers) as pool:
                judged = {row["id"]: verdict for row, verdict in judge_rows(rows, pool)}
                if BOTH:  # also right for the docstring its code restates (what the benchmark asks of a body)
                    stated = [{**row, "instruction": '"""%s"""' % (stated_description(row.get("code") or "") or "")}
                              for row in rows]
                    for row, verdict in judge_rows(stated, pool):
                        if verdict != "right":
                            judged[row["id"]] = "wrong"
            write_jsonl(paths.executed, [
                {**row, "own_verdict": row.get("own_verdict", row["verdict"]),
                 "verdict": "pass" if judged[row["id"]] == "right" else "fail"} for row in rows])
            right = sum(verdict == "right" for verdict in judged.values())
            print(f"oracle arm: {paths.executed}: {right} of {len(rows)} responses right", flush=True)
            return count
        return run

    data_round.execute_round = _oracle_verdicts(data_round.execute_round)
'''


def main() -> None:
    criterion, args = sys.argv[1], [arg for arg in sys.argv[2:] if arg != "--"]
    if criterion not in ("instruction", "both"):
        sys.exit("usage: toyworld_oracle_arm.py instruction|both -- SELF-ALIGN ARGS")
    with tempfile.TemporaryDirectory(prefix="oracle-arm-") as folder:
        Path(folder, "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        path = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "SELFALIGN_ORACLE_ARM": criterion}
        sys.exit(subprocess.call(["selfalign", "self-align", *args], env=env))


if __name__ == "__main__":
    main()
