"""Static checks that a response answers the instruction it was given, not one it restated differently.

Both go beyond StarCoder2-Instruct and SelfCodeAlign (off by default). A small model that restates the task before
solving it often drifts from it: it renames the function, or writes another constant than the one asked. Its own
tests are written by the same model and share the drift, so they pass. These checks compare the code with the
instruction itself:

- :func:`defines_named_function`: the code defines the function the instruction names (its first backticked
  ``name(``), so the answer is to the function that was asked for;
- :func:`uses_stated_values`: every number and quoted string stated in the instruction's prose (outside backticks
  and code blocks) appears as a literal in the code, docstrings left out. It suits instructions that state the
  values the code must use ("keep the first 3 characters", "join with '-'"); one that gives worked examples
  ("f([1, 2]) returns 3") would fail it, so it is an option, not a default.
"""

from __future__ import annotations

import ast
import re

_NAMED = re.compile(r"`\s*(?:def\s+)?([A-Za-z_]\w*)\s*\(")
_FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_BACKTICKED = re.compile(r"`[^`\n]*`")
_STATED = re.compile(r"(?<!\w)'([^'\n]*)'(?!\w)|(?<!\w)\"([^\"\n]*)\"(?!\w)|(?<![\w.])-?(\d+)(?![\w.])")
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def named_function(instruction: str) -> str | None:
    """The function an instruction asks for: the first backticked ``name(`` in it (None if it names none)."""
    found = _NAMED.search(instruction)
    return found.group(1) if found else None


def _parsed(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def defines_named_function(instruction: str, code: str) -> bool:
    """True when the code defines the function the instruction names, or the instruction names none."""
    name = named_function(instruction)
    if name is None:
        return True
    tree = _parsed(code)
    return tree is not None and any(isinstance(node, _FUNCTIONS) and node.name == name for node in ast.walk(tree))


def stated_values(instruction: str) -> set[int | str]:
    """The integers (by absolute value) and quoted strings an instruction's prose states."""
    prose = _BACKTICKED.sub(" ", _FENCED.sub(" ", instruction))
    values: set[int | str] = set()
    for single, double, number in _STATED.findall(prose):
        values.add(abs(int(number)) if number else single or double)
    values.discard("")
    return values


def code_values(code: str) -> set[int | str] | None:
    """The integer and string literals of the code (integers by absolute value), docstrings left out; None if the
    code does not parse."""
    tree = _parsed(code)
    if tree is None:
        return None
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    values: set[int | str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            if isinstance(node.value, int) and not isinstance(node.value, bool):
                values.add(abs(node.value))
            elif isinstance(node.value, str):
                values.add(node.value)
    return values


def uses_stated_values(instruction: str, code: str) -> bool:
    """True when every value the instruction states is a literal of the code (docstrings aside)."""
    stated = stated_values(instruction)
    if not stated:
        return True
    found = code_values(code)
    return found is not None and stated <= found
