"""The real loop on the code world, reduced: two rounds of ``selfalign self-align`` with the committed pretrained
base model, the real stages (hf engine), sandbox, curation, Trainer, export, benchmark evaluation and report.

Asserts what the loop must guarantee, not how much it learns (that is measured in BENCHMARKS.md): every stage of
every round has rows; round r+1's generator is round r's exported model; round r trained on exactly its curated
rows; and one prompt format runs end to end, from the text a curated row trains on to the exported tokenizer's
chat template and the prompts a round's model is given.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from lightning_selfalign.jsonl import read_jsonl
from lightning_selfalign.rounds import DATA_STAGES, RoundPaths, RoundState
from lightning_selfalign.toyworld import build_world, write_world

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = REPO / "models" / "toyworld-base"
ROUNDS = 2


def rows(path: Path) -> list[dict]:
    return list(read_jsonl(path, allow_empty=True)) if path.exists() else []


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lightning_selfalign.cli import main

    root = tmp_path_factory.mktemp("toyworld-loop")
    write_world(root / "world", build_world(seed=0, corpus=10, seed_pool=60, benchmark=8))
    main_config = yaml.safe_load((REPO / "configs" / "self-align-toyworld-cpu.yaml").read_text())
    config = {
        **main_config,
        "model": str(BASE_MODEL),
        "train_config": str(REPO / "configs" / "toyworld-cpu.yaml"),
        "rounds": ROUNDS,
        "epochs_per_round": 1,
        "workdir": str(root / "run"),
        "train_args": [
            f"--model.model_name_or_path={BASE_MODEL}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ],  # fmt: skip
        "seeds": {"source": [str(root / "world" / "seed-pool")], "per_round": 24, "workers": 1},
        "generation": {**main_config["generation"], "n": 2, "batch_size": 48},
        "benchmark_file": str(root / "world" / "benchmark.jsonl"),
        "progress": False,
    }
    path = root / "self-align.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["self-align", f"--config={path}"])
    return root / "run"


@pytest.mark.slow
def test_every_stage_of_every_round_has_rows(loop_run: Path) -> None:
    state = RoundState(loop_run)
    assert state.data()["base"]["pass@1"] is not None
    for round in range(ROUNDS):
        entry = state.round(round)
        assert entry["stage"] == "evaluated", entry
        assert all(entry["counts"][stage] > 0 for stage in DATA_STAGES), (round, entry["counts"])
        assert entry["pass@1"] is not None
    report = loop_run / "report"
    assert (report / "report.html").is_file() and (report / "pass_at_1.png").stat().st_size > 5000


@pytest.mark.slow
def test_each_round_is_generated_by_the_previous_rounds_export(loop_run: Path) -> None:
    state = RoundState(loop_run)
    assert state.round(0)["generator"] == str(BASE_MODEL)
    for round in range(1, ROUNDS):
        exported = str(RoundPaths(loop_run, round - 1).model)
        assert state.round(round - 1)["model_dir"] == exported
        assert state.round(round - 1)["next_model"] == exported
        assert state.round(round)["generator"] == exported
        fingerprints = {row["fingerprint"] for row in rows(RoundPaths(loop_run, round).responses)}
        assert len(fingerprints) == 1, "one model and one setting wrote the round's responses"
    events = [(e["round"], e["stage"]) for e in state.data()["events"]]
    assert events.index((0, "exported")) < events.index((1, "seeds")), "round 1 starts after round 0's export"


@pytest.mark.slow
def test_each_round_trains_on_exactly_its_curated_rows(loop_run: Path) -> None:
    state = RoundState(loop_run)
    for round in range(ROUNDS):
        paths, entry = RoundPaths(loop_run, round), state.round(round)
        curated = rows(paths.sft)
        assert len(curated) == entry["counts"]["curated"]
        assert entry["train_files"] in (str(paths.sft), [str(paths.sft)])
        assert entry["train_stats"]["train_read"] == len(curated) == entry["train_stats"]["train_usable"]
        executed = {row["id"]: row for row in rows(paths.executed)}
        assert all(executed[row["id"]]["verdict"] == "pass" for row in curated), "the execution filter held"


@pytest.mark.slow
def test_one_format_from_curated_row_to_exported_template_and_prompts(loop_run: Path) -> None:
    from transformers import AutoTokenizer

    from lightning_selfalign.chat_template import SYSTEM, messages_for, render_text
    from lightning_selfalign.data.tokenize import ChatTokenizer, load_tokenizer
    from lightning_selfalign.engines import Request, prompt_token_ids
    from lightning_selfalign.evaluation.samples import CHAT_INSTRUCTION, CHAT_RESPONSE_PREFIX, chat_prompt_text
    from lightning_selfalign.evaluation.tasks import load_tasks
    from lightning_selfalign.prompts import build_prompt

    row = rows(RoundPaths(loop_run, 0).sft)[0]
    training = load_tokenizer(str(BASE_MODEL))
    exported = AutoTokenizer.from_pretrained(RoundPaths(loop_run, 0).model)
    bos, eos = exported.bos_token, exported.eos_token
    expected = render_text(row["instruction"], row["response"], bos, eos)
    # What round 0 trained on: the DataModule's tokenization of the curated row, decoded.
    encoded = ChatTokenizer(training, max_length=4096, overflow="drop")({"messages": [messages_for(
        row["instruction"], row["response"])]})  # fmt: skip
    assert training.decode(encoded["input_ids"][0]) == expected
    # What round 0's exported folder renders for the same row.
    rendered = exported.apply_chat_template(messages_for(row["instruction"], row["response"]), tokenize=False)
    assert rendered == expected + "\n\n### Response\n", "StarCoder2-Instruct's template, cut after EOS in training"
    # What round 1's generator is prompted with in chat mode: the same template, the task as the instruction.
    prompt = build_prompt("responses", {"id": "x", "instruction": row["instruction"]}, rng=random.Random(0),
                          chat=True, num_fewshot=0, prompt_format="selfalign-v1")  # fmt: skip
    ids = prompt_token_ids(exported, Request.from_prompt(prompt, seed=0))
    system, query = prompt.messages[0]["content"], prompt.messages[1]["content"]
    assert exported.decode(ids) == render_text(f"{system}\n\n{query}", None, bos, eos)
    # What each round's model is evaluated with: the same template, the answer opened with a fence.
    task = load_tasks(benchmark_file=str(loop_run.parent / "world" / "benchmark.jsonl"))[0]
    instruction = CHAT_INSTRUCTION.format(prompt=task.prompt.strip())
    evaluation = chat_prompt_text(exported, task, CHAT_RESPONSE_PREFIX)
    prefix = CHAT_RESPONSE_PREFIX.replace("{prompt}", task.prompt.strip())
    assert evaluation == render_text(instruction, None, bos, eos) + prefix
    assert SYSTEM in expected
