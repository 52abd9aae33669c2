"""The few-shot examples written for this project, loaded from ``fewshot.yaml`` and validated.

Each example carries the whole lineage one generated row will have: a seed function, the concepts it
exercises, a category and difficulty, an instruction written from them, and a response's parts (reasoning, the
solution, an explanation, tests), which each prompt format lays out its own way. A test runs every example's code
+ tests in the project's sandbox.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

CATEGORIES = ("function", "class", "program")
DIFFICULTIES = ("easy", "medium", "hard")
FEWSHOT_PATH = Path(__file__).with_name("fewshot.yaml")
_FIELDS = (
    "name",
    "category",
    "difficulty",
    "seed",
    "concepts",
    "instruction",
    "reasoning",
    "code",
    "explanation",
    "tests",
)


@dataclass(frozen=True)
class Example:
    """One hand-written few-shot example, every stage's view of it."""

    name: str
    category: str
    difficulty: str
    seed: str
    concepts: tuple[str, ...]
    instruction: str
    reasoning: str
    code: str
    explanation: str
    tests: str


def _example_problems(index: int, raw: object) -> list[str]:
    if not isinstance(raw, dict):
        return [f"example {index}: expected a mapping, got {type(raw).__name__}"]
    where = f"example {index} ({raw.get('name', '?')})"
    problems = [f"{where}: missing field {field!r}" for field in _FIELDS if field not in raw]
    if raw.get("category") not in CATEGORIES:
        problems.append(f"{where}: category must be one of {CATEGORIES}, got {raw.get('category')!r}")
    if raw.get("difficulty") not in DIFFICULTIES:
        problems.append(f"{where}: difficulty must be one of {DIFFICULTIES}, got {raw.get('difficulty')!r}")
    concepts = raw.get("concepts")
    if not (isinstance(concepts, list) and concepts and all(isinstance(c, str) and c.strip() for c in concepts)):
        problems.append(f"{where}: concepts must be a non-empty list of strings")
    for field in ("seed", "instruction", "reasoning", "code", "explanation", "tests"):
        if field in raw and not (isinstance(raw[field], str) and raw[field].strip()):
            problems.append(f"{where}: {field} must be a non-empty string")
    return problems


def parse_examples(data: object, path: Path) -> tuple[Example, ...]:
    """Validate the YAML document (a list of mappings) and build the examples; all problems in one error."""
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty YAML list of examples")
    problems = [problem for index, raw in enumerate(data) for problem in _example_problems(index, raw)]
    names = [raw.get("name") for raw in data if isinstance(raw, dict)]
    problems += [f"duplicate example name {name!r}" for name in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ValueError(f"{path}: invalid few-shot examples:\n  " + "\n  ".join(problems))
    return tuple(
        Example(
            name=str(raw["name"]),
            category=raw["category"],
            difficulty=raw["difficulty"],
            seed=raw["seed"].strip("\n"),
            concepts=tuple(c.strip() for c in raw["concepts"]),
            instruction=raw["instruction"].strip(),
            reasoning=raw["reasoning"].strip(),
            code=raw["code"].strip("\n"),
            explanation=raw["explanation"].strip(),
            tests=raw["tests"].strip("\n"),
        )
        for raw in data
    )


@functools.lru_cache(maxsize=4)
def load_examples(path: str | Path = FEWSHOT_PATH) -> tuple[Example, ...]:
    """The few-shot pool, in file order (the order few-shot sampling starts from)."""
    path = Path(path)
    return parse_examples(yaml.safe_load(path.read_text(encoding="utf-8")), path)
