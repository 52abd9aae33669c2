"""Each published setting the presets follow, pinned (one test per row of docs/fidelity.md that is not pinned by
a prompt-format test in tests/test_prompt_formats.py or an evaluation test)."""

from __future__ import annotations

import inspect
import random

import pytest

from lightning_selfalign.curation import CurationConfig
from lightning_selfalign.options import ExecutionOptions
from lightning_selfalign.prompts import DEFAULT_FORMAT, DEFAULT_NUM_FEWSHOT, build_prompt
from lightning_selfalign.rounds.settings import GenerationOptions
from lightning_selfalign.sandbox.batch import execute_command
from lightning_selfalign.stages import StageSettings, generate_command


def test_starcoder2_instruct_is_every_default() -> None:
    assert DEFAULT_FORMAT == "starcoder2-instruct"
    assert inspect.signature(generate_command).parameters["preset"].default == "starcoder2-instruct"
    assert GenerationOptions().preset == "starcoder2-instruct" and CurationConfig().preset == "starcoder2-instruct"


@pytest.mark.parametrize("preset", ["starcoder2-instruct", "selfcodealign"])
def test_sampling(preset: str) -> None:
    for stage, n in (("concepts", 1), ("instructions", 1), ("responses", 10)):
        settings = StageSettings.for_stage(stage, preset)
        assert (settings.temperature, settings.top_p, settings.max_new_tokens, settings.n) == (0.7, 1.0, 1536, n)
        assert settings.prompt_format == preset


def test_few_shots_per_stage() -> None:
    assert DEFAULT_NUM_FEWSHOT == {"concepts": 8, "instructions": 8, "responses": 1}
    row = {"id": "r", "seed": "def f(x):\n    return x", "concepts": ["a"], "category": "function",
           "difficulty": "easy", "instruction": "Write f."}  # fmt: skip
    for stage, shots in DEFAULT_NUM_FEWSHOT.items():
        assert build_prompt(stage, row, rng=random.Random(3407)).text.count("\n## Example ") == shots + 1


def test_task_kinds() -> None:
    assert StageSettings.for_stage("instructions").categories == ("function",)
    kinds = StageSettings.for_stage("instructions", "selfcodealign").categories
    assert sorted(kinds) == ["class", "function", "function", "program"], "function 1/2, class 1/4, program 1/4"
    assert StageSettings.for_stage("instructions").difficulties == ("easy", "medium", "hard")


def test_execution_time_limit() -> None:
    assert inspect.signature(execute_command).parameters["timeout"].default == 4.0
    assert ExecutionOptions().timeout == 4.0


def test_starcoder2_instruct_curation() -> None:
    config = CurationConfig().resolved()
    assert (config.select, config.seed, config.exact_dedup, config.function_name_dedup) == ("random", 0, True, True)
    assert (config.drop_tests, config.keep_asked_tests, config.drop_reasoning, config.drop_explanation) == (
        True, True, 0.5, 0.5)  # fmt: skip
    assert (config.strip_comments, config.assert_probability, config.near_dedup) == (True, 0.5, False)


def test_selfcodealign_curation() -> None:
    config = CurationConfig(preset="selfcodealign").resolved()
    assert (config.select, config.seed, config.function_name_dedup, config.near_dedup) == ("random", 6666, True, True)
    assert (config.drop_tests, config.keep_asked_tests, config.drop_reasoning, config.drop_explanation) == (
        True, False, 0.0, 0.0)  # fmt: skip
    assert (config.strip_comments, config.assert_probability, config.dedup_threshold) == (False, 0.0, 0.7)


def test_a_set_option_wins_over_the_preset() -> None:
    config = CurationConfig(preset="selfcodealign", near_dedup=False, seed=1).resolved()
    assert (config.near_dedup, config.seed, config.select) == (False, 1, "random")
    assert StageSettings.for_stage("responses", "selfcodealign", n=4, top_p=0.9).n == 4


def test_unknown_preset_is_named() -> None:
    assert CurationConfig(preset="wizardcoder").problems() == [
        "--preset must be one of starcoder2-instruct, selfcodealign, got 'wizardcoder'"
    ]
    with pytest.raises(ValueError, match="unknown preset 'x'"):
        StageSettings.for_stage("responses", "x")


def test_self_align_preset_sets_generation_and_curation_and_bad_options_fail_first(tmp_path) -> None:
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.rounds.command import self_align_command

    with pytest.raises(UserError) as info:  # checked before anything runs: no workdir is written
        self_align_command(model="m", train_config="configs/tiny-cpu.yaml", workdir=str(tmp_path / "run"),
                           preset="selfcodealign", generation=GenerationOptions(preset="x", top_p=2.0),
                           curation=CurationConfig(preset="y"))  # fmt: skip
    assert "--generation.top_p must be in (0, 1]" in str(info.value) and not (tmp_path / "run").exists()
    assert "preset" not in str(info.value), "--preset replaced both parts' presets"
    from lightning_selfalign.rounds.settings import RoundSettings

    settings = RoundSettings(model="m", train_config="configs/tiny-cpu.yaml")
    assert (settings.generation.preset, settings.curation.preset) == ("starcoder2-instruct", "starcoder2-instruct")


def test_both_presets_mine_seeds_under_the_reference_rules() -> None:
    from lightning_selfalign.seeds import SeedFilters, seed_filters

    for preset in ("starcoder2-instruct", "selfcodealign"):  # seed_gathering/ is the same in both repositories
        filters = seed_filters(preset)
        assert filters == SeedFilters()
        assert filters.banned_words == ("todo", "fixme", "bug")
        assert (filters.banned_scope, filters.methods) == ("text", False)
        assert filters.banned_imports == (
            "argparse", "os", "subprocess", "sys", "setuptools", "distutils", "matplotlib", "seaborn",
        )  # fmt: skip
        assert (filters.max_lines, filters.min_lines, filters.max_chars) == (150, 1, None)
        assert (filters.infer_imports, filters.type_check, filters.double_quoted_docstring) == (True, True, True)
        assert (filters.near_duplicate_threshold, filters.decontaminate) == (0.5, True)
    assert seed_filters(near_duplicate_threshold=0.7, methods=None).near_duplicate_threshold == 0.7
    with pytest.raises(ValueError, match="unknown preset"):
        seed_filters("x")
