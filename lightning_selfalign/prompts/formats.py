"""Prompt formats: how a stage's few-shot prompt is laid out, and how a response is read back.

A completion prompt is the stage's system text, then one block per few-shot example, then the new item's block
up to its answer header, for the model to continue. Each block is a *query* (what the stage is given), the
stage's *answer header*, and the *answer* (what the model must write). The formats differ in the words around
them, not in what a stage reads or writes:

``starcoder2-instruct`` (the default; StarCoder2-Instruct as published)
    ``## Example N`` blocks separated by a blank line, the prompt stripped after the last header, stop at
    ``## Example``. Seeds under ``### Snippet``, concepts as one comma-separated line under ``### Concepts``;
    properties (category, language, concepts, difficulty) under ``### Property``, then ``### Instruction``;
    the instruction under ``### Instruction``, the response under ``### Response`` in four sections
    ``[Reasoning]``, ``[Implementation]``, ``[Explanation]``, ``[Tests]``.
``selfcodealign`` (SelfCodeAlign)
    The same blocks; properties under ``### Properties`` (category, language, difficulty, concepts), the
    instruction under ``### Task``; responses as ``<instruction>``...``</instruction>``, ``<response>`` (prose and
    code) ``</response>``, ``<tests>``...``</tests>``, also stopping at ``</tests>``.
``selfalign-v1``
    This project's first layout (``### Example N``, ``[seed]``/``[concepts]``... tags, ``[/example]`` closing each
    block, a ``Tests:`` heading in responses). The code world's committed base model was pretrained on it.

docs/fidelity.md lists the published values these follow, with their paths in the reference repositories.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STAGES = ("concepts", "instructions", "responses")
FORMATS = ("starcoder2-instruct", "selfcodealign", "selfalign-v1")
DEFAULT_FORMAT = "starcoder2-instruct"
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    """Fields to add to the row, or ``fields=None`` and why the row is dropped."""

    fields: dict | None
    drop_reason: str | None


def drop(reason: str) -> Parsed:
    return Parsed(fields=None, drop_reason=reason)


@dataclass(frozen=True)
class Parts:
    """A response's parts, to render in any format (few-shot answers, the code world's documents)."""

    reasoning: str
    code: str
    explanation: str
    tests: str


def _python_blocks(text: str) -> list[str]:
    return [block.strip("\n") for block in _FENCE.findall(text)]


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def _has_assert(source: str) -> bool:
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(source)))


def checked_response(response: str, code_blocks: Sequence[str], test_blocks: Sequence[str]) -> Parsed:
    """The response's fields once its code and tests are checked, or the first problem found."""
    if not any(block.strip() for block in code_blocks):
        return drop("no_code_block")
    if not test_blocks:
        return drop("no_tests")
    tests = "\n".join(test_blocks)
    parsing = [block for block in code_blocks if _parses(block)]
    if not parsing:
        return drop("unparseable_code")
    if not _parses(tests):
        return drop("unparseable_tests")
    if not _has_assert(tests):
        return drop("no_asserts")
    return Parsed(fields={"response": response, "code": "\n".join(parsing), "tests": tests}, drop_reason=None)


@dataclass(frozen=True)
class PromptFormat:
    """One layout: the words around each stage's query and answer, its stop strings, and its response layout."""

    name: str
    system: dict[str, str]
    example_header: str  # numbered per block: "## Example 1"
    answer_header: dict[str, str]
    query_gap: str  # between the query and the answer header
    block_end: str  # after each few-shot answer
    strip_prompt: bool  # the published prompts end right after the answer header, no newline
    stops: dict[str, tuple[str, ...]]
    render_query: Callable[[str, Callable[[str], object]], str]
    render_response: Callable[[Parts], str]
    parse_response: Callable[[str], Parsed]
    render_concepts: Callable[[Sequence[str]], str]

    def stop(self, stage: str) -> list[str]:
        return list(self.stops[stage])

    def block(self, stage: str, query: str, answer: str | None) -> str:
        """One block; with ``answer=None``, the open block the model continues."""
        head = f"{query}{self.query_gap}{self.answer_header[stage]}\n"
        return head if answer is None else f"{head}{answer}{self.block_end}"

    def completion_text(self, stage: str, queries: Sequence[str], answers: Sequence[str], query: str) -> str:
        blocks = [self.system[stage]]
        for number, (example_query, answer) in enumerate(zip(queries, answers), start=1):
            blocks.append(f"{self.example_header} {number}\n{self.block(stage, example_query, answer)}")
        blocks.append(f"{self.example_header} {len(queries) + 1}\n{self.block(stage, query, None)}")
        text = "\n\n".join(blocks)
        return text.rstrip() if self.strip_prompt else text


# --- StarCoder2-Instruct and SelfCodeAlign ------------------------------------------------------------------------

_REFERENCE_SYSTEM = {
    "concepts": (
        "Read a code snippet taken from an open-source repository and name the key programming concepts it uses. "
        "Write the concepts as one comma-separated list."
    ),
    "instructions": (
        "Write independent coding instructions, each original, varied and of high quality, whose category, "
        "language, concepts and difficulty follow the given properties."
    ),
    "responses": (
        "Answer the instruction with the best response you can write, in these steps:\n"
        "1. reason about what the instruction asks for\n"
        "2. write a high-quality solution\n"
        "3. explain the solution briefly\n"
        "4. write assertions that check the solution, and run them"
    ),
}
_SECTIONS = ("Reasoning", "Implementation", "Explanation", "Tests")
_SECTION_LINE = re.compile(r"^\[(Reasoning|Implementation|Explanation|Tests)\][ \t]*$", re.MULTILINE)


def _property_lines(item: Callable[[str], object], category: str, order: Sequence[str]) -> str:
    values = {
        "category": category,
        "language": "Python",
        "concepts": ", ".join(item("concepts")),  # type: ignore[arg-type]
        "difficulty": item("difficulty"),
    }
    return "\n".join(f"{key}: {values[key]}" for key in order)


def _starcoder2_query(stage: str, item: Callable[[str], object]) -> str:
    if stage == "concepts":
        return f"### Snippet\n{str(item('seed')).rstrip()}"
    if stage == "instructions":
        category = f"code generation ({item('category')} implementation)"
        return "### Property\n" + _property_lines(item, category, ("category", "language", "concepts", "difficulty"))
    return f"### Instruction\n{str(item('instruction')).strip()}"


def _starcoder2_response(parts: Parts) -> str:
    return (
        f"[Reasoning]\n{parts.reasoning.strip()}\n\n[Implementation]\n```python\n{parts.code.strip()}\n```\n\n"
        f"[Explanation]\n{parts.explanation.strip()}\n\n[Tests]\n```python\n{parts.tests.strip()}\n```"
    )


def starcoder2_sections(response: str) -> dict[str, str] | None:
    """The four sections' bodies by name (``Reasoning`` ... ``Tests``), or None unless each occurs once, in order."""
    found = _sections_and_tests_start(response)
    return None if found is None else found[0]


def _sections_and_tests_start(response: str) -> tuple[dict[str, str], int] | None:
    matches = list(_SECTION_LINE.finditer(response))
    if tuple(match.group(1) for match in matches) != _SECTIONS:
        return None
    ends = [match.start() for match in matches[1:]] + [len(response)]
    bodies = {match.group(1): response[match.end() : end].strip() for match, end in zip(matches, ends)}
    return bodies, matches[-1].start()


def _parse_starcoder2_response(text: str) -> Parsed:
    """Four sections, each once, in order; the code is every parsing python block before [Tests] (joined,
    as the reference executes them), the tests the python blocks under [Tests]."""
    response = text.strip()
    if not response:
        return drop("empty_response")
    found = _sections_and_tests_start(response)
    if found is None:
        return drop("sections")
    sections, tests_start = found
    return checked_response(response, _python_blocks(response[:tests_start]), _python_blocks(sections["Tests"]))


def _selfcodealign_query(stage: str, item: Callable[[str], object]) -> str:
    if stage == "instructions":
        category = f"{item('category')} implementation"
        return "### Properties\n" + _property_lines(item, category, ("category", "language", "difficulty", "concepts"))
    if stage == "responses":
        return f"<instruction>\n{str(item('instruction')).strip()}\n</instruction>"
    return _starcoder2_query(stage, item)


def _selfcodealign_response(parts: Parts) -> str:
    return (
        f"{parts.reasoning.strip()}\n\n```python\n{parts.code.strip()}\n```\n\n{parts.explanation.strip()}\n"
        f"</response>\n\n<tests>\n```python\n{parts.tests.strip()}\n```\n</tests>"
    )


def _parse_selfcodealign_response(text: str) -> Parsed:
    """Prose and code, ``</response>``, then ``<tests>`` with the tests (the ``</tests>`` stop may be cut off)."""
    response = text.strip()
    if not response:
        return drop("empty_response")
    if "</response>" not in response or "<tests>" not in response.split("</response>", 1)[1]:
        return drop("sections")
    answer, tests = response.split("</response>", 1)
    return checked_response(response, _python_blocks(answer), _python_blocks(tests.split("<tests>", 1)[1]))


# --- selfalign-v1 --------------------------------------------------------------------------------------------------

V1_SYSTEM = {
    "concepts": (
        "Read the Python function and name the programming concepts it exercises: the language features, "
        "standard-library facilities, algorithms and data structures a programmer must know to write it. "
        "Write one short concept per line, starting with '- ', most specific first."
    ),
    "instructions": (
        "Write one self-contained Python programming task that exercises the given concepts, at the given "
        "difficulty. Category 'function' asks for one or a few functions; 'class' asks for a class with its "
        "methods; 'program' asks for a complete script with an `if __name__ == \"__main__\":` block that "
        "reads no input and prints its results. State the names, signatures, inputs, outputs and edge "
        "cases precisely enough that someone could write tests for it. Do not include the solution."
    ),
    "responses": (
        "Solve the Python programming task. First explain the approach in a few sentences, then give the "
        "complete solution in one ```python block, then write 'Tests:' and one ```python block of assert "
        "statements that check the solution, including edge cases. The tests must run as they are, after "
        "the solution, with nothing else defined."
    ),
}
V1_END = "[/example]"
V1_ANSWER_TAG = {"concepts": "[concepts]", "instructions": "[instruction]", "responses": "[response]"}


def _bullets(concepts: Sequence[str]) -> str:
    return "\n".join(f"- {concept}" for concept in concepts)


def _v1_query(stage: str, item: Callable[[str], object]) -> str:
    if stage == "concepts":
        return f"[seed]\n```python\n{str(item('seed')).strip()}\n```"
    if stage == "instructions":
        return (
            f"[properties]\ncategory: {item('category')}\ndifficulty: {item('difficulty')}\n"
            f"concepts:\n{_bullets(item('concepts'))}"  # type: ignore[arg-type]
        )
    return f"[task]\n{str(item('instruction')).strip()}"


def _v1_response(parts: Parts) -> str:
    """Reasoning, the solution block, ``Tests:`` and the tests block (no explanation in this layout)."""
    code, tests = parts.code.strip(), parts.tests.strip()
    return f"{parts.reasoning.strip()}\n\n```python\n{code}\n```\n\nTests:\n\n```python\n{tests}\n```"


def _parse_v1_response(text: str) -> Parsed:
    """The last fenced block is the tests, the block right before it the solution (earlier blocks are
    illustrations in the reasoning)."""
    response = text.strip()
    if not response:
        return drop("empty_response")
    blocks = _python_blocks(response)
    if not blocks:
        return drop("no_code_block")
    if len(blocks) < 2:
        return drop("no_tests")
    return checked_response(response, blocks[-2:-1], blocks[-1:])


_REFERENCE_STOP = ("## Example",)
PROMPT_FORMATS = {
    "starcoder2-instruct": PromptFormat(
        name="starcoder2-instruct",
        system=_REFERENCE_SYSTEM,
        example_header="## Example",
        answer_header={"concepts": "### Concepts", "instructions": "### Instruction", "responses": "### Response"},
        query_gap="\n\n",
        block_end="",
        strip_prompt=True,
        stops={stage: _REFERENCE_STOP for stage in STAGES},
        render_query=_starcoder2_query,
        render_response=_starcoder2_response,
        parse_response=_parse_starcoder2_response,
        render_concepts=", ".join,
    ),
    "selfcodealign": PromptFormat(
        name="selfcodealign",
        system=_REFERENCE_SYSTEM,
        example_header="## Example",
        answer_header={"concepts": "### Concepts", "instructions": "### Task", "responses": "<response>"},
        query_gap="\n\n",
        block_end="",
        strip_prompt=True,
        stops={
            "concepts": _REFERENCE_STOP,
            "instructions": _REFERENCE_STOP,
            "responses": (*_REFERENCE_STOP, "</tests>"),
        },
        render_query=_selfcodealign_query,
        render_response=_selfcodealign_response,
        parse_response=_parse_selfcodealign_response,
        render_concepts=", ".join,
    ),
    "selfalign-v1": PromptFormat(
        name="selfalign-v1",
        system=V1_SYSTEM,
        example_header="### Example",
        answer_header=V1_ANSWER_TAG,
        query_gap="\n",
        block_end=f"\n{V1_END}",
        strip_prompt=False,
        stops={stage: (V1_END, "\n### Example") for stage in STAGES},
        render_query=_v1_query,
        render_response=_v1_response,
        parse_response=_parse_v1_response,
        render_concepts=_bullets,
    ),
}


def get_format(name: str) -> PromptFormat:
    """The format called ``name``, or a ValueError listing the choices."""
    if name not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {', '.join(FORMATS)}")
    return PROMPT_FORMATS[name]
