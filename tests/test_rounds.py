"""Rounds end to end: ``selfalign self-align`` for 2 rounds through the openai engine against the canned loopback
server ``scripted_server.py`` (valid few-shot answers), the real sandbox, real curation and a real Trainer on
the tiny model. The run is SIGKILLed right after round 0's ``executed`` stage, then inside the between-rounds worker
(which must die with it), and rerun: it goes on from where it stopped without generating anything again, and round 1
resumes training from round 0's checkpoint. A junk server (nothing parses) checks the zero-rows path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from helpers import rows_of, scripted

from lightning_selfalign.rounds import (
    STAGES,
    GenerationOptions,
    RoundSettings,
    RoundState,
    SeedOptions,
    best_so_far,
    run_data_round,
    train_files_for,
)
from lightning_selfalign.seeds import SeedFilters

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
GENERATED = ("seeds", "concepts", "instructions", "responses", "executed")


def self_align_config(tmp_path: Path, model: Path, url: str) -> Path:
    config = {
        "model": str(model),
        "train_config": str(REPO / "configs" / "tiny-cpu.yaml"),
        "rounds": 2,
        "epochs_per_round": 1,
        "workdir": str(tmp_path / "run"),
        "train_args": [
            "--trainer.limit_train_batches=2", "--trainer.val_check_interval=null", "--data.val_fraction=0",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
            "--trainer.callbacks=[]", "--trainer.accumulate_grad_batches=1",
        ],
        "seeds": {"source": [str(STDLIB / "statistics.py"), str(STDLIB / "textwrap.py")], "per_round": 4,
                  "filters": {"decontaminate": False, "type_check": False}, "workers": 1},
        "generation": {"engine": "openai", "base_url": url, "served_model": "scripted", "n": 2, "num_fewshot": 1},
        "execution": {"timeout": 10.0, "workers": 2},
        "eval_limit": 2,
        "eval_max_new_tokens": 32,
        "progress": False,
        "handoff": "disk",  # on CPU, cpu would move nothing: disk really empties the state across the worker
    }  # fmt: skip
    path = tmp_path / "self-align.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "lightning_selfalign", "self-align", f"--config={config}"]
    return subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)


def kill_after(process: subprocess.Popen, state: RoundState, round: int, stage: str, timeout: float = 120) -> str:
    """SIGKILL ``process`` as soon as ``state`` shows ``round`` at ``stage``; returns the stage seen at the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            seen = state.stage(round)
        except json.JSONDecodeError:
            seen = None
        if seen is not None and STAGES.index(seen) >= STAGES.index(stage):
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return seen
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"never reached round {round} {stage}; exit {process.poll()}")


def check_lineage(run: Path, round: int) -> None:
    """Every SFT row -> its instruction -> its concepts row -> a seed row of the same round's files."""
    folder = run / f"round-{round}"
    seeds = {row["id"]: row for row in rows_of(folder / "seeds.jsonl")}
    concepts = {row["id"]: row for row in rows_of(folder / "concepts.jsonl")}
    instructions = {row["id"]: row for row in rows_of(folder / "instructions.jsonl")}
    responses = {row["id"]: row for row in rows_of(folder / "responses.jsonl")}
    sft = rows_of(folder / "sft.jsonl")
    assert sft, f"round {round}: the canned answers pass their tests, so some rows are curated"
    for row in sft:
        assert row["round"] == round and row["id"] in responses
        instruction = instructions[row["parent_id"]]
        seed = seeds[concepts[instruction["parent_id"]]["parent_id"]]
        assert seed["round"] == round and responses[row["id"]]["source"] == seed["source"]


@pytest.mark.timeout(300)
def test_two_rounds_killed_twice_resume_without_regenerating(tiny_model_dir, tmp_path):
    server = scripted()
    try:
        config = self_align_config(tmp_path, tiny_model_dir, server.url)
        run = tmp_path / "run"
        state = RoundState(run)
        killed_at = kill_after(launch(config, tmp_path / "killed.log"), state, 0, "executed")
        assert killed_at == "executed", "the kill lands between executed and curated"
        before = {name: (run / "round-0" / f"{name}.jsonl").read_bytes() for name in GENERATED}
        requests_before = server.stats()["requests"]

        # Killed again while the between-rounds worker builds round 1's data: the worker must die with it.
        killed_at = kill_after(launch(config, tmp_path / "killed-2.log"), state, 1, "seeds")
        assert STAGES.index(killed_at) < STAGES.index("curated"), "killed inside the worker, mid data round"
        time.sleep(2.5)
        frozen = state.data()["events"]
        time.sleep(1.0)
        assert state.data()["events"] == frozen, "no orphan worker goes on writing"

        rerun = launch(config, tmp_path / "rerun.log")
        assert rerun.wait(timeout=240) == 0, (tmp_path / "rerun.log").read_text()[-4000:]
        requests_after = server.stats()["requests"]
    finally:
        server.stop()

    after = {name: (run / "round-0" / f"{name}.jsonl").read_bytes() for name in GENERATED}
    assert after == before, "round 0's generated and executed rows are neither regenerated nor appended to"
    data = state.data()
    killed_pid = next(e["pid"] for e in data["events"] if (e["round"], e["stage"]) == (0, "executed"))
    resumed = [e["stage"] for e in data["events"] if e["round"] == 0 and e["pid"] != killed_pid]
    assert resumed[:4] == ["curated", "trained", "exported", "evaluated"], "the rerun starts at curation"
    assert requests_after > requests_before, "round 1 and the evaluations do generate"

    for round in (0, 1):
        entry = state.round(round)
        assert entry["stage"] == "evaluated"
        assert [e["stage"] for e in data["events"] if e["round"] == round] == list(STAGES)
        check_lineage(run, round)
        sft = run / f"round-{round}" / "sft.jsonl"
        assert entry["train_files"] == str(sft), "round r trains on round r's curated rows"
        assert entry["train_stats"]["train_read"] == len(rows_of(sft)) == entry["counts"]["curated"]
        assert (run / f"round-{round}" / "model" / "config.json").is_file()
        assert json.loads((run / f"round-{round}" / "humaneval.json").read_text())["num_tasks"] == 2
    ids = [{row["id"] for row in rows_of(run / f"round-{r}" / "sft.jsonl")} for r in (0, 1)]
    assert not ids[0] & ids[1], "round 1 trains on new rows, from other seeds"
    # Round 1 resumed from round 0's checkpoint at the epoch boundary: same step count per round, none repeated.
    assert state.round(1)["global_step"] == 2 * state.round(0)["global_step"] > 0
    # Round 1's lr schedule began again where round 0 ended, sized from round 1's own batches.
    import torch

    checkpoint = torch.load(run / "round-1" / "trained.ckpt", map_location="cpu", weights_only=False)
    schedule = checkpoint["lr_schedulers"][0]["lr_lambdas"][0]
    steps = state.round(0)["global_step"]
    assert schedule["start"] == steps and schedule["total_steps"] == state.round(1)["global_step"] - steps
    assert state.round(1)["generator"] == str(run / "round-0" / "model")
    assert not (run / "round-0" / "trained.ckpt").exists() and (run / "round-1" / "trained.ckpt").exists()
    assert (run / "handoff").is_dir() and not list((run / "handoff").iterdir()), "each handoff was taken back"
    summary = json.loads((run / "summary.json").read_text())
    assert [entry["round"] for entry in summary["rounds"]] == [0, 1]


@pytest.mark.timeout(120)
def test_a_round_that_curates_nothing_is_recorded_and_falls_back(tmp_path):
    server = scripted(junk_every=1)  # every answer unparseable
    try:
        settings = RoundSettings(
            model="unused", train_config=str(REPO / "configs" / "tiny-cpu.yaml"),
            seeds=SeedOptions(source=[str(STDLIB / "textwrap.py")], per_round=3,
                              filters=SeedFilters(decontaminate=False, type_check=False), workers=1),
            generation=GenerationOptions(engine="openai", base_url=server.url, served_model="scripted", num_fewshot=0),
            progress=False,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sft = run_data_round(0, "unused", tmp_path, settings)
    finally:
        server.stop()
    state = RoundState(tmp_path)
    assert state.stage(0) == "curated" and sft.exists() and rows_of(sft) == []
    assert state.round(0)["counts"] == {"seeds": 3, "concepts": 0, "instructions": 0, "responses": 0,
                                        "executed": 0, "curated": 0}  # fmt: skip
    assert any("curation kept 0 rows" in str(w.message) for w in caught)
    assert train_files_for(state, 0) is None, "no round data yet: the training config's own files"


@pytest.mark.timeout(120)
def test_the_base_model_can_write_every_rounds_tasks(tmp_path):
    """--generation.task_writer base: the base model writes a later round's concepts and instructions, the round's
    generator its responses, one served at a time (each switch through the reload command), and state.json says
    which wrote what."""
    server, served = scripted(), tmp_path / "served"
    base, latest = tmp_path / "base", tmp_path / "round-0-model"
    base.mkdir(), latest.mkdir()
    try:
        settings = RoundSettings(
            model=str(base), train_config=str(REPO / "configs" / "tiny-cpu.yaml"),
            seeds=SeedOptions(source=[str(STDLIB / "textwrap.py")], per_round=3,
                              filters=SeedFilters(decontaminate=False, type_check=False), workers=1),
            generation=GenerationOptions(engine="openai", base_url=server.url, served_model="scripted", n=1,
                                         num_fewshot=1, task_writer="base", reload_wait=False,
                                         reload_command=f"echo {{model_dir}} >> {served}"),
            progress=False,
        )  # fmt: skip
        assert settings.problems() == []
        run_data_round(1, str(latest), tmp_path / "run", settings)
    finally:
        server.stop()
    assert served.read_text().split() == [str(base), str(latest)], "the base for the tasks, then the round's model"
    facts = RoundState(tmp_path / "run").round(1)
    assert facts["counts"]["instructions"] > 0 and facts["counts"]["responses"] > 0
    assert (facts["task_writer"], facts["generator"]) == (str(base), str(latest))
    unserved = replace(settings, generation=replace(settings.generation, reload_command=None))
    assert any("task_writer base with --generation.engine openai needs" in p for p in unserved.problems())


def test_rollback_picks_the_best_kept_model(tmp_path):
    state = RoundState(tmp_path)
    state.set_base(**{"pass@1": 0.2})
    assert best_so_far(state, 0, "base") == ("base", 0.2)
    for round, score, rolled in ((0, 0.3, False), (1, 0.1, True)):
        for stage in STAGES:
            state.record(round, stage)
        state.record(round, "evaluated", **{"pass@1": score, "rolled_back": rolled})
    assert best_so_far(state, 2, "base") == (str(tmp_path / "round-0" / "model"), 0.3)
    with pytest.raises(AssertionError, match="concepts after evaluated"):
        state.record(0, "concepts")


def test_shipped_self_align_config_parses():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_selfalign.rounds import self_align_command

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(self_align_command)
    parsed = parser.parse_args([f"--config={REPO / 'configs' / 'self-align-tiny-cpu.yaml'}"])
    assert parsed.rounds == 2 and parsed.generation.n == 2 and parsed.seeds.per_round == 8
    assert (REPO / parsed.train_config).is_file() and parsed.curation is None
