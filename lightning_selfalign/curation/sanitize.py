"""Response clean-up, one named transformation per function (each one a ``selfalign curate`` option).

Responses follow the generation prompt's layout (:mod:`lightning_selfalign.prompts.formats`): StarCoder2-Instruct's
four tagged sections, SelfCodeAlign's ``</response>`` then ``<tests>``, or reasoning, a solution block, ``Tests:``
and a block of asserts. Models also write ```` ```py ````, forget the
closing fence, run on into the next few-shot example, or end with pleasantries; these functions undo
that without touching the code itself.
"""

from __future__ import annotations

import ast
import io
import random
import re
import tokenize
from dataclasses import dataclass

_FENCE_LINE = re.compile(r"^(?P<indent>[ \t]*)```[ \t]*(?P<lang>[\w+#.-]*)[ \t]*$")
_PYTHON_TAGS = {"", "py", "python", "python3", "py3"}
# Template leftovers: the model ran on into the next example or echoed a chat token.
_RUN_ON = re.compile(
    r"^\s*(?:\[end\]|#{2,3} Example\b|### Instruction\b|\[task\]|\[response\]|<\|endoftext\|>|<\|im_end\|>|</s>)",
    re.IGNORECASE,
)
_CHATTER = re.compile(
    r"hope (?:this|that|it) helps|let me know|feel free to|happy coding|good luck|glad (?:I could|to) help|"
    r"if you have any (?:other |further |more )?questions|you're welcome",
    re.IGNORECASE,
)
_TESTS_HEADING = re.compile(r"^\s*(?:#+\s*|\[)?(?:unit |example )?tests?(?: cases)?\]?\s*:?\s*$", re.IGNORECASE)
# NotImplementedError and bare ``...`` are left alone: abstract methods and protocols use them legitimately.
_INCOMPLETE = re.compile(r"\bTODO\b|\bFIXME\b|(?i:your code (?:goes )?here)")


@dataclass(frozen=True)
class Block:
    """A fenced block: lines ``open`` and ``close`` are the fences (``close`` is None if never closed)."""

    open: int
    close: int | None
    lang: str


def fenced_blocks(lines: list[str]) -> list[Block]:
    """The fenced blocks of a response split into lines."""
    blocks: list[Block] = []
    opened: tuple[int, str] | None = None
    for number, line in enumerate(lines):
        fence = _FENCE_LINE.match(line)
        if not fence:
            continue
        if opened is None:
            opened = (number, fence["lang"].lower())
        else:
            blocks.append(Block(opened[0], number, opened[1]))
            opened = None
    if opened is not None:
        blocks.append(Block(opened[0], None, opened[1]))
    return blocks


def normalize_fences(response: str) -> str:
    """Fences on their own line as ```` ```python ```` / ```` ``` ````; an unclosed last block closed;
    trailing spaces removed; at most one blank line in a row outside code."""
    lines = [line.rstrip() for line in response.strip().splitlines()]
    blocks = fenced_blocks(lines)
    inside: set[int] = set()
    for block in blocks:
        lang = "python" if block.lang in _PYTHON_TAGS else block.lang
        lines[block.open] = f"```{lang}"
        if block.close is None:
            lines.append("```")
            close = len(lines) - 1
        else:
            lines[block.close] = "```"
            close = block.close
        inside.update(range(block.open + 1, close))
    kept = [
        line
        for number, line in enumerate(lines)
        if line or number in inside or number == 0 or lines[number - 1] or number - 1 in inside
    ]
    return "\n".join(kept).strip()


def strip_chatter(response: str) -> str:
    """Cut a run-on into the next prompt example, then drop closing pleasantries after the last block."""
    lines = response.splitlines()
    inside = {n for b in fenced_blocks(lines) for n in range(b.open, (b.close or len(lines) - 1) + 1)}
    cut = next((n for n, line in enumerate(lines) if n not in inside and _RUN_ON.match(line)), len(lines))
    text = "\n".join(lines[:cut]).rstrip()
    last_fence = text.rfind("```")
    head, tail = (text[: last_fence + 3], text[last_fence + 3 :]) if last_fence >= 0 else ("", text)
    paragraphs = re.split(r"\n\s*\n", tail)
    while paragraphs and (not paragraphs[-1].strip() or _CHATTER.search(paragraphs[-1])):
        paragraphs.pop()
    if not head:
        return "\n\n".join(paragraphs).strip() or text.strip()
    return (head + "\n\n".join(paragraphs)).rstrip()


def _same_code(a: str, b: str) -> bool:
    return [line.rstrip() for line in a.strip().splitlines()] == [line.rstrip() for line in b.strip().splitlines()]


def drop_tests(response: str, tests: str) -> str:
    """Remove the tests from the response: SelfCodeAlign's ``</response>`` and all after it, else the block
    holding ``tests`` (and a ``Tests:`` heading right before it)."""
    if "</response>" in response:
        return response.split("</response>", 1)[0].strip()
    lines = response.splitlines()
    for block in reversed(fenced_blocks(lines)):
        close = block.close if block.close is not None else len(lines) - 1
        if tests.strip() and _same_code("\n".join(lines[block.open + 1 : close]), tests):
            start = block.open
            previous = start - 1
            while previous >= 0 and not lines[previous].strip():
                previous -= 1
            if previous >= 0 and _TESTS_HEADING.match(lines[previous]):
                start = previous
            return "\n".join(lines[:start] + lines[close + 1 :]).strip()
    return response


def untagged_sections(sections: dict[str, str], reasoning: bool, explanation: bool, tests: bool) -> str:
    """StarCoder2-Instruct's sections joined by blank lines without their tags, the ones not wanted left out
    (the implementation always stays)."""
    wanted = {"Reasoning": reasoning, "Implementation": True, "Explanation": explanation, "Tests": tests}
    return "\n\n".join(body for name, body in sections.items() if wanted[name] and body.strip())


def defined_names(code: str) -> frozenset[str]:
    """Names of the functions (nested too) and classes ``code`` defines; empty if it does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return frozenset()
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return frozenset(node.name for node in ast.walk(tree) if isinstance(node, kinds))


def assert_augmented_instruction(instruction: str, tests: str, rng: random.Random, probability: float) -> str:
    """With ``probability``, the instruction plus some of its tests ("Your code should pass the following ...").

    As the reference: tests made only of assert lines give 1-5 of them (drawn), other tests of at most five
    lines are shown whole; never when the instruction already mentions asserts, tests or examples.
    """
    lowered = instruction.lower()
    if probability <= 0 or "assert" in instruction or "for example" in lowered or "test" in lowered:
        return instruction
    lines = [line for line in tests.strip().splitlines() if line.strip()]
    if lines and all(line.startswith("assert") for line in lines):
        chosen = rng.sample(lines, k=min(rng.choice([1, 2, 3, 4, 5]), len(lines)))
        term = "assertions" if len(chosen) > 1 else "assertion"
    else:
        chosen, term = lines, "test case"
    if not chosen or len(chosen) > 5 or "assert" not in "\n".join(chosen) or rng.random() >= probability:
        return instruction
    block = "\n".join(chosen).strip()
    return f"{instruction.rstrip()}\n\nYour code should pass the following {term}:\n```python\n{block}\n```"


def strip_python_comments(source: str) -> str:
    """``source`` without ``#`` comments (string contents untouched); line-based if it does not tokenize."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    lines = source.splitlines()
    comment_only: set[int] = set()
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        row, col = token.start
        before = lines[row - 1][:col]
        lines[row - 1] = before.rstrip()
        if not before.strip():
            comment_only.add(row - 1)
    return "\n".join(line for number, line in enumerate(lines) if number not in comment_only)


def strip_comments(response: str) -> str:
    """Remove comments inside the response's Python blocks (prose outside the blocks is kept)."""
    lines = response.splitlines()
    for block in reversed(fenced_blocks(lines)):
        if block.lang not in _PYTHON_TAGS or block.close is None:
            continue
        body = strip_python_comments("\n".join(lines[block.open + 1 : block.close]))
        lines[block.open + 1 : block.close] = body.splitlines()
    return "\n".join(lines)


def is_incomplete(response: str) -> bool:
    """Placeholders that mark an unfinished solution (TODO, FIXME, "your code here")."""
    # The substring checks skip the (slow, case-insensitive) regex for the usual complete response.
    if "TODO" not in response and "FIXME" not in response and "here" not in response.lower():
        return False
    return _INCOMPLETE.search(response) is not None
