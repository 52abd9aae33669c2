"""Ground truth for generated rows: is a response's code right for the instruction it answers?

The world's descriptions follow a grammar (:meth:`Task.description`), so an instruction the model wrote can be
parsed back into steps and checked with reference outputs. This is a measuring instrument for benchmarks only
(``bench/toyworld_filter_precision.py``): the loop never sees it, it judges what the loop kept. Model code runs
in the project's sandbox, never in this process.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from typing import Any

from lightning_selfalign.sandbox import Limits, SandboxPool, Verdict
from lightning_selfalign.toyworld.ops import NOUN, OPS, Op, Step
from lightning_selfalign.toyworld.tasks import Task, draw_input

_TYPE_OF_NOUN = {noun: kind for kind, noun in NOUN.items()}
_DESCRIPTION = re.compile(r"Given (?P<noun>" + "|".join(NOUN.values()) + r"), (?P<phrases>.*)\.$", re.DOTALL)
_DOCSTRING = re.compile(r'"""(.*?)"""', re.DOTALL)
_PLAIN_INSTRUCTION = re.compile(r"`\. (Given .*)$", re.DOTALL)
CHECKED_INPUTS = 12


def _phrase_pattern(op: Op) -> re.Pattern:
    pattern = re.escape(op.phrase)
    pattern = pattern.replace(re.escape("{k}"), "(?P<k>-?\\d+)")  # k is an integer; c, a, b are words
    for constant in ("c", "a", "b"):
        pattern = pattern.replace(re.escape("{" + constant + "}"), f"(?P<{constant}>-?\\w+)")
    return re.compile(pattern + "$")


_PHRASES = [(op, _phrase_pattern(op)) for op in OPS]


def parse_description(text: str) -> Task | None:
    """The task a description states ("Given a string, ..., then ...."), or None if it is not in the grammar."""
    match = _DESCRIPTION.match(text.strip())
    if not match:
        return None
    kind, steps = _TYPE_OF_NOUN[match["noun"]], []
    for phrase in match["phrases"].split(", then "):
        for op, pattern in _PHRASES:
            found = pattern.match(phrase) if op.source == kind else None
            if found:
                values = {name: int(value) if name == "k" else value for name, value in found.groupdict().items()}
                steps.append(Step(op, values))
                kind = op.target
                break
        else:
            return None
    return Task("reference", tuple(steps))


def stated_description(text: str) -> str | None:
    """The description an instruction or a function states: its docstring, else the text after the signature."""
    docstring = _DOCSTRING.search(text)
    if docstring:
        return docstring.group(1)
    plain = _PLAIN_INSTRUCTION.search(text.strip())
    return plain.group(1) if plain else None


def reference_tests(task: Task, entry_point: str, seed: int = 0) -> str | None:
    """Asserts comparing ``entry_point`` with the task's reference outputs on fresh inputs (None if none run)."""
    rng, function, lines = random.Random(seed), task.function(), []
    for _ in range(CHECKED_INPUTS):
        argument = draw_input(task.source, rng)
        try:
            expected = function(argument)
        except Exception:  # the stated chain fails on this input; judge on the others
            continue
        lines.append(f"assert {entry_point}({argument!r}) == {expected!r}")
    return "\n".join(lines) or None


def _defined_function(code: str) -> str | None:
    names = re.findall(r"^def (\w+)\(", code, re.MULTILINE)
    return names[-1] if names else None


def judge(row: dict[str, Any]) -> tuple[str, str] | str:
    """(code, reference tests) for a row whose instruction parses and whose code defines a function, else the
    judgement already known: ``unparsable`` (the instruction is not in the grammar) or ``wrong``."""
    description = stated_description(row.get("instruction") or "")
    task = parse_description(description) if description else None
    if task is None:
        return "unparsable"
    code = row.get("code") or ""
    entry_point = _defined_function(code)
    tests = reference_tests(task, entry_point) if entry_point else None
    if tests is None:
        return "wrong"
    return code, tests


def judge_rows(rows: Iterable[dict[str, Any]], pool: SandboxPool) -> Iterator[tuple[dict[str, Any], str]]:
    """Each row with ``right``, ``wrong`` or ``unparsable``: its code run against the instruction's reference."""
    rows = list(rows)
    judged = [judge(row) for row in rows]
    runnable = [index for index, pair in enumerate(judged) if isinstance(pair, tuple)]
    verdicts = dict(pool.map(runnable, Limits(timeout_s=4.0), lambda index: judged[index]))
    for index, (row, pair) in enumerate(zip(rows, judged)):
        if isinstance(pair, str):
            yield row, pair
        else:
            yield row, "right" if verdicts[index].verdict == Verdict.PASS else "wrong"
