"""Sharded data rounds: each shard writes and executes its rows, the merge gives the files one process writes.

Generation goes to the canned loopback server ``scripted_server.py`` (answers by per-sample seed, some
unparseable or cut off, so dropped samples merge too); execution and curation are real. Compared with a one-process
round: every generated file byte for byte, the SFT file byte for byte, executed rows field for field except
``duration_s`` (a wall-clock measurement, different on every run). The ways in: shards written in one process then
merged; a worker process SIGKILLed mid-shard and rerun; and ``selfalign self-align`` under Lightning DDP with 2 CPU
processes on gloo, where each rank's worker writes its half of round 1 and both ranks train on the merged rows, run
through and with rank 1's worker SIGKILLed mid-shard, then rerun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from helpers import rows_of, scripted

from lightning_selfalign.errors import UserError
from lightning_selfalign.options import ExecutionOptions
from lightning_selfalign.rounds import (
    STAGES,
    GenerationOptions,
    RoundPaths,
    RoundSettings,
    RoundState,
    SeedOptions,
    finish_data_round,
    load_settings,
    round_worker,
    run_data_round,
    save_settings,
    shard_state,
    write_shard,
)
from lightning_selfalign.seeds import SeedFilters
from lightning_selfalign.stages import dropped_path

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
GENERATED = ("seeds", "concepts", "instructions", "responses")
SERVER = {"junk_every": 13, "length_every": 11}  # some unparseable and some cut-off answers: dropped files have rows


def round_settings(url: str, **overrides) -> RoundSettings:
    settings = RoundSettings(
        model="unused", train_config=str(REPO / "configs" / "tiny-cpu.yaml"), evaluate=False, progress=False,
        seeds=SeedOptions(source=[str(STDLIB / "statistics.py"), str(STDLIB / "textwrap.py")], per_round=8,
                          filters=SeedFilters(decontaminate=False, type_check=False), workers=1),
        generation=GenerationOptions(engine="openai", base_url=url, served_model="scripted", n=2, num_fewshot=1),
        execution=ExecutionOptions(timeout=10.0, workers=2),
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


def assert_same_round(sharded: Path, one: Path, round: int) -> None:
    """The merged round's files equal the one-process round's (executed rows but for their measured duration)."""
    merged, single = RoundPaths(sharded, round), RoundPaths(one, round)
    for stage in GENERATED:
        pairs = [(getattr(merged, stage), getattr(single, stage))]
        if stage != "seeds":
            pairs.append((dropped_path(pairs[0][0]), dropped_path(pairs[0][1])))
        for ours, theirs in pairs:
            assert ours.read_bytes() == theirs.read_bytes(), f"round {round}: {ours.name} differs from one process's"
    timeless = [[{k: v for k, v in row.items() if k != "duration_s"} for row in rows_of(paths.executed)]
                for paths in (merged, single)]  # fmt: skip
    assert timeless[0] == timeless[1], f"round {round}: executed rows"
    assert merged.sft.read_bytes() == single.sft.read_bytes(), f"round {round}: curated rows"
    assert rows_of(merged.sft), f"round {round}: the canned answers pass their tests, so some rows are curated"
    assert RoundState(sharded).round(round)["counts"] == RoundState(one).round(round)["counts"]


def assert_both_halves(workdir: Path, round: int) -> None:
    for index in range(2):
        part = RoundPaths(workdir, round, (index, 2))
        assert rows_of(part.responses) and rows_of(part.executed), f"shard {index}/2 generated and executed rows"


@pytest.mark.timeout(180)
def test_two_shards_merge_to_the_one_process_round(tmp_path):
    server = scripted(**SERVER)
    try:
        settings = round_settings(server.url)
        run_data_round(0, "unused", tmp_path / "one", settings)
        sharded = tmp_path / "sharded"
        for index in range(2):
            write_shard(0, "unused", sharded, settings, (index, 2))
        assert RoundState(sharded).stage(0) is None, "shards write their own state files, not state.json"
        assert shard_state(sharded, 0, (1, 2)).stage(0) == "executed"
        with pytest.raises(UserError, match=r"shard\(s\) 0/3, 1/3, 2/3 not written"):
            finish_data_round(0, "unused", sharded, settings, 3)
        finish_data_round(0, "unused", sharded, settings, 2)
    finally:
        server.stop()
    assert_both_halves(sharded, 0)
    assert_same_round(sharded, tmp_path / "one", 0)
    assert [e["stage"] for e in RoundState(sharded).data()["events"]] == list(STAGES[:6])


def evaluated_round_0(workdir: Path, settings: RoundSettings) -> None:
    """A workdir whose round 0 is trained, exported and evaluated: the worker may make round 1's data."""
    save_settings(workdir, settings)
    state = RoundState(workdir)
    for stage in STAGES:
        state.record(0, stage, next_model="unused")


def kill_when(process: subprocess.Popen, path: Path, timeout: float = 90) -> None:
    """SIGKILL ``process`` once ``path`` has a row."""
    deadline = time.monotonic() + timeout
    while not rows_of(path):
        assert process.poll() is None, f"the worker exited ({process.returncode}) before writing {path.name}"
        assert time.monotonic() < deadline, f"{path.name} never got a row"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.timeout(180)
def test_a_shard_killed_mid_stage_resumes_to_the_same_round(tmp_path):
    server = scripted(delay=0.2, **SERVER)  # slow enough that the kill lands mid-stage
    try:
        settings = round_settings(server.url)
        settings.generation.batch_size = 1
        run_data_round(1, "unused", tmp_path / "one", settings)
        sharded = tmp_path / "sharded"
        evaluated_round_0(sharded, settings)
        worker = [sys.executable, "-m", "lightning_selfalign.rounds", f"--workdir={sharded}", "--round=0",
                  "--model_dir=unused", "--shard=1/2", "--step=generate"]  # fmt: skip
        killed = subprocess.Popen(worker, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = RoundPaths(sharded, 1, (1, 2))
        kill_when(killed, part.responses)
        assert shard_state(sharded, 1, (1, 2)).stage(1) == "instructions", "killed inside the responses stage"
        written = part.responses.read_bytes()

        round_worker(str(sharded), 0, "unused", shard="0/2", step="generate")
        with pytest.raises(UserError, match=r"shard\(s\) 1/2 not written and executed yet"):
            round_worker(str(sharded), 0, "unused", shard="0/2", step="curate")
        round_worker(str(sharded), 0, "unused", shard="1/2", step="generate")  # the rerun on that rank
        round_worker(str(sharded), 0, "unused", shard="0/2", step="curate")
    finally:
        server.stop()
    assert part.responses.read_bytes().startswith(written), "rows written before the kill are kept, not redone"
    pids = {e["pid"] for e in shard_state(sharded, 1, (1, 2)).data()["events"]}
    assert len(pids) == 2, "the killed worker recorded seeds to instructions, the rerun the rest"
    assert_both_halves(sharded, 1)
    assert_same_round(sharded, tmp_path / "one", 1)


def self_align_config(tmp_path: Path, url: str, tiny_model_dir: Path, **generation) -> Path:
    train_files = {"class_path": "pause_callback.RecordTrainFiles", "init_args": {"folder": str(tmp_path / "ranks")}}
    parts = asdict(round_settings(url))
    config = {
        "seeds": parts["seeds"], "generation": {**parts["generation"], **generation}, "execution": parts["execution"],
        "model": str(tiny_model_dir), "train_config": str(REPO / "configs" / "tiny-cpu.yaml"), "rounds": 2,
        "workdir": str(tmp_path / "run"), "evaluate": False, "progress": False, "handoff": "disk",
        "train_args": [
            "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
            "--trainer.limit_train_batches=2", "--trainer.val_check_interval=null", "--data.val_fraction=0",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
            f"--trainer.callbacks=[{json.dumps(train_files)}]", "--trainer.accumulate_grad_batches=1",
        ],
    }  # fmt: skip
    path = tmp_path / "self-align.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, log: Path) -> subprocess.Popen:
    """``selfalign self-align`` with the tests' callbacks importable in both ranks."""
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    command = [sys.executable, "-m", "lightning_selfalign", "self-align", f"--config={config}"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def check_ddp_run(tmp_path: Path, run: Path, one: Path) -> None:
    """Both ranks' workers wrote a shard of round 1, the merge equals one process's rounds, both ranks trained on it."""
    assert_both_halves(run, 1)
    first = [shard_state(run, 1, (i, 2)).data()["events"][0]["pid"] for i in range(2)]
    merger = next(e["pid"] for e in RoundState(run).data()["events"] if (e["round"], e["stage"]) == (1, "seeds"))
    assert len({*first, merger}) == 3, "each rank's worker began its own shard; another process merged them"
    for round in range(2):
        assert_same_round(run, one, round)
    sft = str(RoundPaths(run, 1).sft)
    for rank in range(2):
        epochs = rows_of(tmp_path / "ranks" / f"rank-{rank}.jsonl")
        assert [e["train_files"] for e in epochs if e["epoch"] == 1] == [sft], f"rank {rank} trains on the merge"
    assert RoundState(run).round(1)["stage"] == "evaluated"


def one_process_rounds(run: Path, one: Path) -> None:
    """The DDP run's rounds made again in one process, with its settings and no training: round 1's rows come from
    the served (canned) model, so they do not depend on round 0's weights."""
    for round in range(2):
        run_data_round(round, "unused", one, load_settings(run))


@pytest.mark.timeout(300)
def test_ddp_ranks_each_write_their_half_and_train_on_the_merge(tiny_model_dir, tmp_path):
    server = scripted(**SERVER)
    try:
        process = launch(self_align_config(tmp_path, server.url, tiny_model_dir), tmp_path / "ddp.log")
        assert process.wait(timeout=280) == 0, (tmp_path / "ddp.log").read_text()[-4000:]
        one_process_rounds(tmp_path / "run", tmp_path / "one")
    finally:
        server.stop()
    check_ddp_run(tmp_path, tmp_path / "run", tmp_path / "one")


@pytest.mark.timeout(400)
def test_ddp_rank_killed_mid_shard_reruns_to_the_same_result(tiny_model_dir, tmp_path):
    server = scripted(delay=0.2, **SERVER)  # one request at a time (batch_size 1): the kill lands mid-shard
    try:
        config = self_align_config(tmp_path, server.url, tiny_model_dir, batch_size=1)
        run = tmp_path / "run"
        process = launch(config, tmp_path / "killed.log")
        shard = shard_state(run, 1, (1, 2))
        deadline = time.monotonic() + 240
        while not shard.reached(1, "instructions"):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "rank 1's worker never reached its responses"
            time.sleep(0.02)
        os.kill(shard.data()["events"][0]["pid"], signal.SIGKILL)  # rank 1's worker, mid-shard
        assert process.wait(timeout=120) != 0, "a rank whose worker died ends the run"
        assert not shard.reached(1, "executed"), "killed before its shard was done"

        rerun = launch(config, tmp_path / "rerun.log")
        assert rerun.wait(timeout=240) == 0, (tmp_path / "rerun.log").read_text()[-4000:]
        one_process_rounds(run, tmp_path / "one")
    finally:
        server.stop()
    check_ddp_run(tmp_path, run, tmp_path / "one")
    assert len({e["pid"] for e in shard.data()["events"]}) == 2, "the rerun finished rank 1's shard"


def test_a_ranks_worker_sees_only_that_ranks_gpu(monkeypatch):
    from types import SimpleNamespace

    from lightning_selfalign.callbacks import rank_device_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert rank_device_env(SimpleNamespace(type="cuda", index=1))["CUDA_VISIBLE_DEVICES"] == "5"
    assert rank_device_env(SimpleNamespace(type="cpu", index=None))["CUDA_VISIBLE_DEVICES"] == "4,5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert rank_device_env(SimpleNamespace(type="cuda", index=1))["CUDA_VISIBLE_DEVICES"] == "1"
