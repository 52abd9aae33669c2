"""Tasks of the code world: chains of 1-4 :mod:`~lightning_selfalign.toyworld.ops` steps, each a typed,
documented Python function with a reference solution and reference tests computed by running it.

A task is rendered three ways from the same steps: the function itself (an assignment per step), one nested
expression of the steps applied to a literal input (how the world's own tests check a result), and a
HumanEval-format benchmark row whose ``check`` compares with the outputs the reference computed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lightning_selfalign.toyworld.ops import INT, NOUN, OPS, STR, TYPES, VARIABLE, Op, Step

WORDS = ("cat", "tree", "moon", "data", "list", "melon", "stone", "rain", "idea", "note", "ocean", "star")
INPUTS_PER_TASK = 6
MAX_OUTPUT_CHARS = 80


@dataclass(frozen=True)
class Task:
    """One function of the world: its name and its steps (the first step's source type is the argument's)."""

    name: str
    steps: tuple[Step, ...]

    @property
    def source(self) -> str:
        return self.steps[0].op.source

    @property
    def target(self) -> str:
        return self.steps[-1].op.target

    @property
    def composition(self) -> tuple[str, ...]:
        """The operations without their constants: what the splits keep apart."""
        return tuple(step.op.name for step in self.steps)

    @property
    def key(self) -> tuple:
        return tuple((step.op.name, tuple(sorted(step.values.items()))) for step in self.steps)

    def signature(self) -> str:
        return f"{self.name}({VARIABLE[self.source]}: {self.source}) -> {self.target}"

    def description(self) -> str:
        phrases = ", then ".join(step.phrase() for step in self.steps)
        return f"Given {NOUN[self.source]}, {phrases}."

    def concepts(self) -> list[str]:
        return [step.op.concept for step in self.steps]

    def prompt(self) -> str:
        """Signature and docstring: the benchmark prompt, and the start of :meth:`code`."""
        return f'def {self.signature()}:\n    """{self.description()}"""\n'

    def code(self) -> str:
        """The reference solution: the prompt, then :meth:`body`."""
        return self.prompt() + self.body()

    def body(self) -> str:
        """One assignment per step, the last one returned."""
        lines, value = [], VARIABLE[self.source]
        for step in self.steps[:-1]:
            name = VARIABLE[step.op.target]
            lines.append(f"    {name} = {step.expression(value)}")
            value = name
        lines.append(f"    return {self.steps[-1].expression(value)}")
        return "\n".join(lines)

    def nested(self, literal: str) -> str:
        """The steps as one expression applied to ``literal`` (the form the world's tests use)."""
        expression = literal
        for index, step in enumerate(self.steps):
            expression = step.expression(expression if index == 0 else f"({expression})")
        return expression

    def function(self) -> Callable[[object], object]:
        """The reference solution as a callable (executed here: it is our own code, not a model's)."""
        namespace: dict = {}
        exec(compile(self.code(), f"<{self.name}>", "exec"), namespace)
        return namespace[self.name]


def draw_input(kind: str, rng: random.Random) -> object:
    if kind == INT:
        return rng.randint(-12, 40)
    if kind == STR:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        return rng.choice(["", " "]) + words + rng.choice(["", " "])
    values = [rng.randint(-5, 9) for _ in range(rng.randint(0, 6))]
    return values + values[:1] if rng.random() < 0.3 else values


def draw_steps(length: int, rng: random.Random) -> tuple[Step, ...] | None:
    """A random chain of ``length`` type-compatible steps, or None when it dead-ends."""
    kind, steps = rng.choice(TYPES), []
    for _ in range(length):
        choices = [op for op in OPS if op.source == kind and not _repeats(steps, op)]
        if not choices:
            return None
        op: Op = rng.choice(choices)
        steps.append(op.draw(rng))
        kind = op.target
    return tuple(steps)


def _repeats(steps: list[Step], op: Op) -> bool:
    return bool(steps) and steps[-1].op.name == op.name


def task_name(steps: tuple[Step, ...]) -> str:
    """Named after what it does, as programmers name functions: its operations in order."""
    return "_".join(step.op.name for step in steps)


def reference_cases(task: Task, rng: random.Random) -> list[tuple[object, object]] | None:
    """``INPUTS_PER_TASK`` (input, output) pairs, or None for a task that fails, explodes or is near constant."""
    cases, function = [], task.function()
    for _ in range(INPUTS_PER_TASK):
        argument = draw_input(task.source, rng)
        try:
            output = function(argument)
        except Exception:  # e.g. a digit list of a negative sign: the chain is not a valid task
            return None
        if len(repr(output)) > MAX_OUTPUT_CHARS:
            return None
        cases.append((argument, output))
    if len({repr(output) for _, output in cases}) < 3:
        return None
    return cases


def draw_task(length: int, rng: random.Random) -> tuple[Task, list[tuple[object, object]]] | None:
    steps = draw_steps(length, rng)
    if steps is None:
        return None
    task = Task(task_name(steps), steps)
    cases = reference_cases(task, rng)
    return None if cases is None else (task, cases)


def check_source(task: Task, cases: list[tuple[object, object]]) -> str:
    """HumanEval's ``test`` field: ``check(candidate)`` asserting the reference outputs."""
    lines = [f"    assert candidate({argument!r}) == {output!r}" for argument, output in cases]
    return "def check(candidate):\n" + "\n".join(lines) + "\n"


assert len({op.concept for op in OPS}) == len(OPS), "a concept names one operation"
