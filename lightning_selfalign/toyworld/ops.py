"""The operations of the code world: small typed steps over ints, strings and lists of ints.

Each :class:`Op` turns a value of one type into a value of another with a Python expression in which ``{x}`` is
the value and appears exactly once (so a chain of steps nests into one expression without repeating work), a
description phrase for docstrings and instructions, and a concept name. Constants are drawn per use.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

INT, STR, LIST = "int", "str", "list[int]"
TYPES = (INT, STR, LIST)
# Variable and parameter names by type: what a programmer would call such a value.
VARIABLE = {INT: "n", STR: "s", LIST: "xs"}
NOUN = {INT: "an integer", STR: "a string", LIST: "a list of integers"}
LETTERS = "abcdeilmnorst"


@dataclass(frozen=True)
class Op:
    """One step: ``expression`` and ``phrase`` are format strings over ``{x}`` and the drawn constants."""

    name: str
    source: str
    target: str
    expression: str
    phrase: str
    concept: str
    constants: Callable[[random.Random], dict] = lambda rng: {}

    def draw(self, rng: random.Random) -> Step:
        return Step(self, self.constants(rng))


@dataclass(frozen=True)
class Step:
    """An operation with its constants drawn."""

    op: Op
    values: dict

    def expression(self, x: str) -> str:
        return self.op.expression.format(x=x, **self.values)

    def phrase(self) -> str:
        return self.op.phrase.format(**self.values)


def _k(low: int, high: int) -> Callable[[random.Random], dict]:
    return lambda rng: {"k": rng.randint(low, high)}


def _char(rng: random.Random) -> dict:
    return {"c": rng.choice(LETTERS)}


def _two_chars(rng: random.Random) -> dict:
    a, b = rng.sample(LETTERS, 2)
    return {"a": a, "b": b}


OPS: tuple[Op, ...] = (
    # int -> int
    Op("add", INT, INT, "{x} + {k}", "add {k}", "integer addition", _k(1, 9)),
    Op("sub", INT, INT, "{x} - {k}", "subtract {k}", "integer subtraction", _k(1, 9)),
    Op("mul", INT, INT, "{x} * {k}", "multiply by {k}", "integer multiplication", _k(2, 5)),
    Op("div", INT, INT, "{x} // {k}", "floor-divide by {k}", "floor division", _k(2, 5)),
    Op("mod", INT, INT, "{x} % {k}", "take the remainder modulo {k}", "the modulo operator", _k(2, 9)),
    Op("square", INT, INT, "{x} ** 2", "square it", "exponentiation"),
    Op("neg", INT, INT, "-{x}", "negate it", "unary minus"),
    Op("abs", INT, INT, "abs({x})", "take its absolute value", "absolute value"),
    Op("atleast", INT, INT, "max({x}, {k})", "raise it to at least {k}", "max of two numbers", _k(-5, 5)),
    Op("atmost", INT, INT, "min({x}, {k})", "cap it at {k}", "min of two numbers", _k(-5, 5)),
    Op("above", INT, INT, "int({x} > {k})", "give 1 if it is greater than {k}, else 0", "comparison to int", _k(-3, 6)),
    # list -> list
    Op(
        "map_add",
        LIST,
        LIST,
        "[v + {k} for v in {x}]",
        "add {k} to each element",
        "mapping with a list comprehension",
        _k(1, 9),
    ),  # fmt: skip
    Op(
        "map_mul",
        LIST,
        LIST,
        "[v * {k} for v in {x}]",
        "multiply each element by {k}",
        "scaling list elements",
        _k(2, 5),
    ),  # fmt: skip
    Op("map_square", LIST, LIST, "[v * v for v in {x}]", "square each element", "squaring list elements"),
    Op(
        "map_abs",
        LIST,
        LIST,
        "[abs(v) for v in {x}]",
        "take the absolute value of each element",
        "absolute values of list elements",
    ),  # fmt: skip
    Op(
        "map_clip",
        LIST,
        LIST,
        "[v if v > {k} else 0 for v in {x}]",
        "replace each element not above {k} by 0",
        "conditional expression in a comprehension",
        _k(-2, 4),
    ),  # fmt: skip
    Op(
        "keep_gt",
        LIST,
        LIST,
        "[v for v in {x} if v > {k}]",
        "keep the elements greater than {k}",
        "filtering with a comparison",
        _k(-3, 5),
    ),  # fmt: skip
    Op("keep_even", LIST, LIST, "[v for v in {x} if v % 2 == 0]", "keep the even elements", "filtering even numbers"),
    Op("keep_odd", LIST, LIST, "[v for v in {x} if v % 2 == 1]", "keep the odd elements", "filtering odd numbers"),
    Op(
        "drop_k",
        LIST,
        LIST,
        "[v for v in {x} if v != {k}]",
        "remove every {k}",
        "removing a value from a list",
        _k(0, 5),
    ),  # fmt: skip
    Op("reverse", LIST, LIST, "{x}[::-1]", "reverse the list", "list slicing with a negative step"),
    Op("sort", LIST, LIST, "sorted({x})", "sort it in ascending order", "sorting a list"),
    Op("sort_desc", LIST, LIST, "sorted({x}, reverse=True)", "sort it in descending order", "sorting in reverse"),
    Op("head", LIST, LIST, "{x}[:{k}]", "keep the first {k} elements", "list slicing of a prefix", _k(1, 4)),
    Op("tail", LIST, LIST, "{x}[{k}:]", "drop the first {k} elements", "list slicing of a suffix", _k(1, 3)),
    Op("append", LIST, LIST, "{x} + [{k}]", "append {k}", "list concatenation", _k(0, 9)),
    Op(
        "unique",
        LIST,
        LIST,
        "list(dict.fromkeys({x}))",
        "remove repeated elements, keeping the first of each",
        "order-preserving deduplication",
    ),  # fmt: skip
    # list -> int
    Op("sum", LIST, INT, "sum({x})", "sum the elements", "summing a list"),
    Op("len", LIST, INT, "len({x})", "count the elements", "length of a list"),
    Op("max", LIST, INT, "max({x}, default=0)", "take the largest element (0 if there is none)", "max with a default"),
    Op("min", LIST, INT, "min({x}, default=0)", "take the smallest element (0 if there is none)", "min with a default"),
    Op("count", LIST, INT, "{x}.count({k})", "count how often {k} occurs", "counting occurrences", _k(0, 4)),
    # str -> str
    Op("upper", STR, STR, "{x}.upper()", "convert it to upper case", "string upper-casing"),
    Op("rev_str", STR, STR, "{x}[::-1]", "reverse the string", "string reversal by slicing"),
    Op("strip", STR, STR, "{x}.strip()", "strip surrounding spaces", "whitespace stripping"),
    Op(
        "replace",
        STR,
        STR,
        "{x}.replace('{a}', '{b}')",
        "replace every '{a}' by '{b}'",
        "string replacement",
        _two_chars,
    ),  # fmt: skip
    Op("prefix", STR, STR, "{x}[:{k}]", "keep the first {k} characters", "string slicing of a prefix", _k(1, 5)),
    Op("suffix", STR, STR, "{x}[{k}:]", "drop the first {k} characters", "string slicing of a suffix", _k(1, 3)),
    Op("double", STR, STR, "{x} * 2", "repeat it twice", "string repetition"),
    Op("add_char", STR, STR, "{x} + '{c}'", "append '{c}'", "string concatenation", _char),
    Op(
        "no_vowels",
        STR,
        STR,
        "''.join(c for c in {x} if c not in 'aeiou')",
        "remove the vowels",
        "filtering characters with join",
    ),  # fmt: skip
    # str -> int
    Op("str_len", STR, INT, "len({x})", "take its length", "length of a string"),
    Op("count_char", STR, INT, "{x}.count('{c}')", "count the '{c}' characters", "counting characters", _char),
    Op(
        "find",
        STR,
        INT,
        "{x}.find('{c}')",
        "find the index of the first '{c}' (-1 if absent)",
        "searching a string",
        _char,
    ),  # fmt: skip
    # str -> list
    Op(
        "codes",
        STR,
        LIST,
        "[ord(c) - 96 for c in {x}]",
        "turn each character into its alphabet position",
        "character codes with ord",
    ),  # fmt: skip
    Op("word_lens", STR, LIST, "[len(w) for w in {x}.split()]", "take the length of each word", "splitting into words"),
    # int -> str / list, list -> str
    Op("to_str", INT, STR, "str({x})", "convert it to a string", "integer to string conversion"),
    Op(
        "digits",
        INT,
        LIST,
        "[int(d) for d in str(abs({x}))]",
        "take the list of its decimal digits",
        "digits of a number",
    ),  # fmt: skip
    Op("join", LIST, STR, "'-'.join(str(v) for v in {x})", "join the elements with '-'", "joining numbers as text"),
)
BY_NAME = {op.name: op for op in OPS}
assert len(BY_NAME) == len(OPS), "operation names must be unique"
assert all(op.expression.count("{x}") == 1 for op in OPS), "each expression uses its value exactly once"
