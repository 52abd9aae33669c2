"""One set of option types (``lightning_selfalign.options``) for the commands and the rounds: the same settings reach
the engine, the stage, the sandbox and evaluation the same way from ``selfalign generate / execute / evaluate`` and
from ``selfalign self-align``; every field of every shared type is described in ``--help``; settings.json written
before a field existed still loads and resumes; the handoff and round timeout flags reach settings.json and the
rounds callback."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path

import pytest

from lightning_selfalign.curation import CurationConfig
from lightning_selfalign.engines import Completion
from lightning_selfalign.options import EngineChoice, EvaluationSampling, ExecutionOptions, SamplingOptions
from lightning_selfalign.rounds.settings import GenerationOptions, RoundSettings, SeedOptions
from lightning_selfalign.seeds import SeedFilters

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = str(REPO / "configs" / "tiny-cpu.yaml")
ENGINE_FIELDS = [field.name for field in dataclasses.fields(EngineChoice)]


def engine_settings(options: EngineChoice) -> dict:
    return {name: getattr(options, name) for name in ENGINE_FIELDS}


class FakeEngine:
    """Answers every request with an empty completion (the stage drops it as unparseable)."""

    name, model, default_batch_size = "fake", "fake-model", 4

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def generate(self, requests, sampling):
        return [Completion(text="", finish_reason="stop", num_tokens=1) for _ in requests]

    def close(self) -> None:
        pass


@pytest.fixture
def loads(monkeypatch) -> list[tuple]:
    """Every (engine name, model, options) the shared ``EngineChoice.load`` is asked for; each gets a FakeEngine."""
    calls: list[tuple] = []

    def load_engine(name, model, options):
        calls.append((name, model, options))
        return FakeEngine()

    monkeypatch.setattr("lightning_selfalign.options.load_engine", load_engine)
    return calls


def test_the_rounds_parts_are_the_shared_types():
    assert issubclass(GenerationOptions, EngineChoice) and issubclass(GenerationOptions, SamplingOptions)
    parts = typing.get_type_hints(RoundSettings)
    assert (parts["execution"], parts["curation"]) == (ExecutionOptions, CurationConfig)
    assert typing.get_type_hints(SeedOptions)["filters"] is SeedFilters


@pytest.mark.parametrize(
    ("command", "shared", "own_defaults"),
    [
        ("lightning_selfalign.stages:generate_command", EngineChoice, {}),
        ("lightning_selfalign.stages:generate_command", SamplingOptions, {}),
        ("lightning_selfalign.evaluation:evaluate_command", EngineChoice, {}),
        ("lightning_selfalign.sandbox.batch:execute_command", ExecutionOptions, {}),
        # evaluate: limits from the benchmark (None), and a benchmark's trusted tests run without the policy
        ("lightning_selfalign.evaluation:evaluate_command", ExecutionOptions,
         {"timeout": None, "memory": None, "policy": False}),
        ("lightning_selfalign.evaluation:evaluate_command", EvaluationSampling, {}),
        ("lightning_selfalign.curation:curate_command", CurationConfig, {}),
    ],
)  # fmt: skip
def test_each_commands_flags_default_to_the_shared_types_defaults(command, shared, own_defaults):
    from lightning_selfalign.cli import _load

    flags = inspect.signature(_load(command)).parameters
    defaults = {field.name: field.default for field in dataclasses.fields(shared) if field.name in flags}
    assert defaults, f"{command} takes no flag of {shared.__name__}"
    given = {name: flags[name].default for name in defaults}
    tuples = ("dedup_fields", "benchmark_files", "decontamination_fields")  # flags default None, config a tuple
    expected = {name: own_defaults.get(name, value) for name, value in defaults.items() if name not in tuples}
    assert {name: given[name] for name in expected} == expected


def test_the_rounds_openai_engine_gets_request_timeout_and_retries(monkeypatch):
    from lightning_selfalign.engines.openai import OpenAIEngine
    from lightning_selfalign.rounds import round_engine

    async def served(self) -> str:  # no server: the engine asks for the model list when it starts
        return "served"

    monkeypatch.setattr(OpenAIEngine, "_served_model", served)
    options = GenerationOptions(engine="openai", base_url="http://127.0.0.1:9/v1", served_model="tiny",
                                request_timeout=7.0, max_retries=1, concurrency=3)  # fmt: skip
    with round_engine("round-0/model", options) as engine:
        backend = engine.get()
        assert isinstance(backend, OpenAIEngine) and backend.model == "tiny"
        assert (backend.request_timeout, backend.max_retries, backend.concurrency) == (7.0, 1, 3)
    assert (GenerationOptions().request_timeout, GenerationOptions().max_retries) == (600.0, 5)


def test_generate_command_and_a_round_run_a_stage_with_the_same_settings(tmp_path, monkeypatch, loads):
    from lightning_selfalign import stages
    from lightning_selfalign.rounds import generate, round_engine

    ran = []
    run_stage = stages.run_stage
    monkeypatch.setattr(stages, "run_stage", lambda *args, **kw: ran.append(args[4]) or run_stage(*args, **kw))
    rows = tmp_path / "concepts.jsonl"
    rows.write_text("".join(json.dumps({"id": f"c{i}", "seed": "def f(): pass", "concepts": ["x"]}) + "\n"
                            for i in range(3)))  # fmt: skip
    stages.generate_command(
        stage="instructions", input=str(rows), output=str(tmp_path / "cmd.jsonl"), model="m", temperature=0.3,
        top_p=0.9, max_new_tokens=77, num_fewshot=0, categories=["class"], difficulties=["hard"], batch_size=3,
        seed=5, dtype="float32", concurrency=2, progress=False,
    )  # fmt: skip
    options = GenerationOptions(temperature=0.3, top_p=0.9, max_new_tokens_instructions=77, num_fewshot=0,
                                categories=["class"], difficulties=["hard"], batch_size=3, seed=5, dtype="float32",
                                concurrency=2)  # fmt: skip
    settings = RoundSettings(model="m", train_config=TRAIN_CONFIG, generation=options, progress=False)
    with round_engine("m", options) as engine:
        generate("instructions", rows, tmp_path / "round.jsonl", engine, 0, settings)
    assert ran[0] == ran[1] and ran[0].max_new_tokens == 77 and ran[0].categories == ("class",)
    (_, cmd_model, cmd_options), (_, round_model, round_options) = loads
    assert cmd_model == round_model == "m" and engine_settings(cmd_options) == engine_settings(round_options)


def test_execute_command_and_a_round_run_the_sandbox_under_the_same_limits(tmp_path, monkeypatch):
    from lightning_selfalign.rounds import RoundPaths, execute_round
    from lightning_selfalign.sandbox import batch

    calls = []

    def execute_rows(rows, output, limits, workers, isolation, allow_unsafe, *rest):
        calls.append((list(rows), limits, workers, isolation, allow_unsafe))
        return {"rows_executed": 0, "verdicts": {}, "skipped": {}, "samples_per_s": None, "isolation": isolation}

    monkeypatch.setattr(batch, "execute_rows", execute_rows)
    paths = RoundPaths(tmp_path / "run", 0)
    paths.responses.parent.mkdir(parents=True)
    paths.responses.write_text(json.dumps({"id": "r", "code": "x = 1", "tests": "assert x"}) + "\n")
    batch.execute_command(str(paths.responses), str(tmp_path / "cmd.jsonl"), timeout=2.5, memory=512, workers=1,
                          run_as_main=True, progress=False)  # fmt: skip
    execution = ExecutionOptions(timeout=2.5, memory=512, workers=1, run_as_main=True)
    execute_round(paths, RoundSettings(model="m", train_config=TRAIN_CONFIG, execution=execution, progress=False))
    assert calls[0] == calls[1] and calls[0][1] == execution.limits()
    assert (calls[0][1].timeout_s, calls[0][1].policy) == (2.5, True)


def test_evaluate_command_and_a_round_evaluate_with_the_same_options(tmp_path, monkeypatch):
    from lightning_selfalign import evaluation
    from lightning_selfalign.evaluation import command
    from lightning_selfalign.rounds import evaluate_model

    calls = []

    def evaluate(output, **options):
        calls.append(options)
        return {"benchmark": "b", "pass@1": 0.5, "verdicts": {}, "num_tasks": 1, "n": 1, "results": "r"}

    monkeypatch.setattr(command, "evaluate", evaluate)
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    served = dict(engine="openai", base_url="http://127.0.0.1:9/v1", request_timeout=7.0, max_retries=1)
    command.evaluate_command(output=str(tmp_path / "cmd.json"), model="tiny", chat=True, tokenizer="round-0/model",
                             max_new_tokens=64, limit=3, timeout=4.0, memory=1024, progress=False,
                             **served)  # fmt: skip
    generation = GenerationOptions(served_model="tiny", **served)
    settings = RoundSettings(model="m", train_config=TRAIN_CONFIG, generation=generation, eval_max_new_tokens=64,
                             eval_limit=3, progress=False)  # fmt: skip
    evaluate_model("round-0/model", tmp_path / "round.json", settings, chat=True)
    by_command, by_round = calls
    assert engine_settings(by_command.pop("engine")) == engine_settings(by_round.pop("engine"))
    assert by_command.pop("samples") is None and by_command.pop("allow_missing") is False
    assert by_command.pop("benchmark") == "humaneval" and by_command.pop("ks") is None
    assert by_command == by_round
    assert by_round["sampling"] == EvaluationSampling(max_new_tokens=64, chat=True)
    assert by_round["execution"] == ExecutionOptions(policy=False)


def undocumented(help_text: str, prefix: str, names: list[str]) -> list[str]:
    """The fields whose ``--help`` entry shows only the flag, its metavar, type and default: no description."""
    entries = re.split(r"\n\s+(?=--)", help_text)
    missing = []
    for name in names:
        entry = next(e for e in entries if re.match(rf"{re.escape(prefix + name)}[\s,]", e))
        words = entry.split("(type:")[0].split()
        if all(w.startswith(("--", "{", "[")) or w.rstrip(",+").isupper() for w in words):
            missing.append(name)
    return missing


@pytest.mark.parametrize(
    ("group", "cls"),
    [("generation", GenerationOptions), ("execution", ExecutionOptions), ("curation", CurationConfig),
     ("seeds", SeedOptions)],
)  # fmt: skip
def test_self_align_help_describes_every_field_of_the_shared_types(group, cls, capsys):
    from lightning_selfalign.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["self-align", f"--{group}.help", cls.__name__])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    names = [field.name for field in dataclasses.fields(cls) if field.name != "filters"]
    assert undocumented(help_text, f"--{group}.", names) == []
    if cls is SeedOptions:
        filters = [field.name for field in dataclasses.fields(SeedFilters)]
        assert undocumented(help_text, "--seeds.filters.", filters) == []


def test_evaluation_sampling_and_engine_choice_fields_are_described():
    from jsonargparse import ArgumentParser

    for cls in (EvaluationSampling, EngineChoice, SamplingOptions):
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "x")
        names = [field.name for field in dataclasses.fields(cls)]
        assert undocumented(parser.format_help(), "--x.", names) == [], cls.__name__


def test_settings_json_from_before_request_timeout_loads_and_resumes(tmp_path):
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.rounds.command import refuse_changed_settings
    from lightning_selfalign.rounds.settings import load_settings, save_settings

    settings = RoundSettings(model="m", train_config=TRAIN_CONFIG)
    path = save_settings(tmp_path, settings)
    saved = json.loads(path.read_text())
    for name in ("request_timeout", "max_retries", "task_writer"):
        del saved["generation"][name]
    del saved["round_timeout_h"]
    path.write_text(json.dumps(saved))
    assert load_settings(tmp_path).generation == settings.generation
    assert load_settings(tmp_path).round_timeout_h == 72.0
    refuse_changed_settings(tmp_path, settings)  # an older run resumes with the new fields at their defaults
    settings.generation.task_writer = "base"  # what an older run did not do: refused
    with pytest.raises(UserError, match=r"generation.task_writer: None -> 'base'"):
        refuse_changed_settings(tmp_path, settings)


def test_handoff_and_round_timeout_reach_settings_json_and_the_callback(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from lightning_selfalign.callbacks import SelfAlignRounds
    from lightning_selfalign.cli import main
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.rounds import command
    from lightning_selfalign.rounds.settings import load_settings, save_settings

    with pytest.raises(SystemExit):
        main(["self-align", "--help"])
    assert undocumented(capsys.readouterr().out, "--", ["handoff", "handoff_dir", "round_timeout_h"]) == []

    settings = RoundSettings(model="m", train_config=TRAIN_CONFIG, handoff="disk", handoff_dir=str(tmp_path / "h"),
                             round_timeout_h=0.5)  # fmt: skip
    assert settings.problems() == []
    save_settings(tmp_path, settings)
    loaded = load_settings(tmp_path)
    assert (loaded.handoff, loaded.handoff_dir, loaded.round_timeout_h) == ("disk", str(tmp_path / "h"), 0.5)
    built = []
    trainer = SimpleNamespace(fit=lambda *args, **kwargs: None, is_global_zero=True)
    monkeypatch.setattr(command, "build_cli", lambda args, callbacks: built.extend(callbacks) or
                        SimpleNamespace(trainer=trainer, model=None, datamodule=None))  # fmt: skip
    assert command.train(loaded, tmp_path, "sft.jsonl", None)
    (callback,) = built
    assert (callback.handoff, callback.handoff_dir, callback.round_timeout_h) == ("disk", tmp_path / "h", 0.5)

    for hours in (0, -1.0, float("inf")):
        problems = RoundSettings(model="m", train_config=TRAIN_CONFIG, round_timeout_h=hours).problems()
        assert problems == [f"--round_timeout_h must be a finite number of hours > 0, got {hours}"]
    with pytest.raises(UserError, match="round_timeout_h must be a finite number of hours > 0, got 0"):
        SelfAlignRounds(workdir=str(tmp_path), round_timeout_h=0)
