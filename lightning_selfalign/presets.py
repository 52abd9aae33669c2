"""Presets: the published pipelines' settings, by name. ``starcoder2-instruct`` is every command's default.

A preset fills each option the user leaves unset; every option stays settable on its own (a named departure).
docs/fidelity.md gives each value's source in the reference repositories and the test that pins it.

- ``starcoder2-instruct``: bigcode-project/starcoder2-self-align, the recipe of StarCoder2-15B-Instruct-v0.1.
- ``selfcodealign``: bigcode-project/selfcodealign (arXiv 2410.24198): its own prompt layout and task kinds
  (function 1/2, class 1/4, program 1/4).
"""

from __future__ import annotations

from dataclasses import dataclass

PRESETS = ("starcoder2-instruct", "selfcodealign")
DEFAULT_PRESET = "starcoder2-instruct"


@dataclass(frozen=True)
class GenerationPreset:
    """Sampling and prompting of the three generation stages."""

    prompt_format: str
    # Drawn uniformly per instruction, so a kind listed twice is drawn twice as often.
    categories: tuple[str, ...]
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1536  # every stage
    n_responses: int = 10  # responses per instruction; one sample per seed and per concept list


GENERATION = {
    "starcoder2-instruct": GenerationPreset(prompt_format="starcoder2-instruct", categories=("function",)),
    "selfcodealign": GenerationPreset(
        prompt_format="selfcodealign", categories=("function", "function", "class", "program")
    ),
}


def check_preset(name: str) -> str:
    """``name`` if it is a preset, else a ValueError listing the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name


def generation_preset(name: str) -> GenerationPreset:
    return GENERATION[check_preset(name)]


@dataclass(frozen=True)
class CurationPreset:
    """Selection and sanitizing of passing responses into training rows."""

    select: str  # one passing response per instruction: random (seeded)
    seed: int  # the reference's shuffle seed
    drop_tests: bool  # tests removed from the training response...
    keep_asked_tests: bool  # ...except where the instruction mentions tests
    drop_reasoning: float  # probability, per row
    drop_explanation: float  # probability, per row
    strip_comments: bool
    assert_probability: float  # asserts appended to the instruction
    function_name_dedup: bool  # one row per set of defined function (and class) names
    near_dedup: bool  # MinHash on instruction, response, code


CURATION = {
    # SC2: RAW sanitize -> clean_data (seed-0 shuffle, exact and function-name dedup) -> SMART sanitize; no MinHash.
    "starcoder2-instruct": CurationPreset(
        select="random",
        seed=0,
        drop_tests=True,
        keep_asked_tests=True,
        drop_reasoning=0.5,
        drop_explanation=0.5,
        strip_comments=True,
        assert_probability=0.5,
        function_name_dedup=True,
        near_dedup=False,
    ),  # fmt: skip
    # SCA: sanitize_data (seed-6666 shuffle, exact and name dedup, tests always split off) -> MinHash at 0.7.
    "selfcodealign": CurationPreset(
        select="random",
        seed=6666,
        drop_tests=True,
        keep_asked_tests=False,
        drop_reasoning=0.0,
        drop_explanation=0.0,
        strip_comments=False,
        assert_probability=0.0,
        function_name_dedup=True,
        near_dedup=True,
    ),  # fmt: skip
}


def curation_preset(name: str) -> CurationPreset:
    return CURATION[check_preset(name)]
