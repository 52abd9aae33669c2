"""Helpers shared by several test modules: the scripted loopback server, fit arguments for the tiny model, and rows.

``tests/`` is importable because pytest puts the folder of a rootless test module (no ``__init__.py``, with
``conftest.py``) on ``sys.path``; the modules import this one as ``helpers``.
"""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from lightning_selfalign.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]
SCRIPTED_SERVER = Path(__file__).resolve().with_name("scripted_server.py")


# ---------------------------------------------------------------- servers on loopback


class ServerProcess:
    """A server subprocess; ``url`` is read from the first line it prints."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:  # read lazily, so the test can work while the server starts
            line = self.process.stdout.readline()
            if " on http" not in line:
                self.process.kill()
                raise RuntimeError(f"server did not start: {line!r} {self.process.stderr.read()[-2000:]}")
            self._url = line.strip().rsplit(" ", 1)[1]
        return self._url

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def scripted(**options: float) -> ServerProcess:
    """``scripted_server.py`` with these fault options (``delay=0.3`` -> ``--delay=0.3``)."""
    args = [f"--{key}={value}" for key, value in options.items()]
    return ServerProcess([sys.executable, str(SCRIPTED_SERVER), *args])


# ---------------------------------------------------------------- `selfalign fit` on the tiny model

WORDS = "alpha beta gamma delta sort list tree parse value index count string merge split".split()


def write_sft(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` random instruction/response rows of varied lengths, as an SFT JSONL file."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        instruction = f"Task {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        body = " + ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 18)))
        rows.append({"id": str(i), "instruction": instruction, "response": f"def f(x):\n    return {body}\n"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fit_args(model_dir: Path, data: Path, root: Path, *extra: str) -> list[str]:
    """``selfalign fit`` on configs/tiny-cpu.yaml, quiet, no validation, every step logged to CSV under ``root``."""
    return [
        "fit",
        "--config", str(REPO / "configs" / "tiny-cpu.yaml"),
        "--model.model_name_or_path", str(model_dir),
        "--model.attn_implementation", "eager",
        "--data.train_files", str(data),
        "--data.val_fraction", "0",
        "--data.cache_dir", str(root / "cache"),
        "--trainer.default_root_dir", str(root),
        "--trainer.limit_val_batches", "0",
        "--trainer.val_check_interval", "null",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(root / "logs"),
        "--trainer.log_every_n_steps", "1",
        *extra,
    ]  # fmt: skip


def logged(root: Path, key: str = "train/loss") -> list[float]:
    """Every value of ``key`` that :func:`fit_args`' CSV logger wrote under ``root``, in version order."""
    values = []
    for metrics in sorted((root / "logs").rglob("metrics.csv")):
        with metrics.open() as handle:
            values += [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]
    return values


# ---------------------------------------------------------------- rows

# Three curation tasks and a working solution of each: the parents of the rows :func:`executed` makes.
TASKS = {
    "p1": (
        "Write `merge_intervals(intervals)` that merges overlapping [start, end] pairs and returns them sorted.",
        "merge_intervals",
    ),
    "p2": (
        "Write `top_words(text, k)` returning the k most frequent lower-cased words, ties alphabetical.",
        "top_words",
    ),
    "p3": ("Write `is_balanced(text)` that checks that (), [] and {} are properly nested in a string.", "is_balanced"),
}
BODIES = {
    "merge_intervals": """def merge_intervals(intervals):
    ordered = sorted(intervals, key=lambda pair: pair[0])
    merged = []
    for start, end in ordered:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged""",
    "top_words": """def top_words(text, k):
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:k]""",
    "is_balanced": """def is_balanced(text):
    pairs = {')': '(', ']': '[', '}': '{'}
    stack = []
    for ch in text:
        if ch in '([{':
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack""",
}


def executed(
    parent: str,
    sample: int,
    *,
    verdict: str = "pass",
    tests_run: int = 3,
    code: str | None = None,
    instruction: str | None = None,
    **extra,
) -> dict:
    """One executed row shaped like the pipeline's: reasoning, solution block, 'Tests:' and an assert block."""
    task, name = TASKS.get(parent, (instruction, "merge_intervals"))
    code = code or BODIES[name]
    name = re.search(r"def (\w+)", code).group(1)
    tests = f"assert {name} is not None\nassert callable({name})"
    response = f"We solve it in one pass over the input.\n\n```python\n{code}\n```\n\nTests:\n\n```python\n{tests}\n```"
    row = {
        "id": f"{parent}-{sample}",
        "parent_id": parent,
        "round": 1,
        "fingerprint": "abc",
        "seed": "def s(): pass",
        "concepts": ["loops"],
        "category": "function",
        "difficulty": "easy",
        "instruction": instruction or task,
        "response": response,
        "code": code,
        "tests": tests,
        "sample_index": sample,
        "finish_reason": "stop",
        "verdict": verdict,
        "reason": "",
        "tests_run": tests_run,
        "duration_s": 0.1,
    }
    row.update(extra)
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSONL file at ``path``."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict]:
    """The rows of a JSONL file that may be missing, empty or still being written."""
    return list(read_jsonl(path, allow_empty=True)) if path.exists() else []
