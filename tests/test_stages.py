"""The stage runner end to end: seeds -> concepts -> instructions -> responses.

Two engines, both real: the hf engine on the tiny random model (junk text, so nearly everything is dropped
and counted: this exercises batching, stop handling and the drop path on every stage), and the openai
engine over loopback HTTP against the scripted server ``scripted_server.py`` (canned but valid
few-shot answers, with some junk and cut-off answers mixed in: this exercises the kept path and lineage).
A stage killed with SIGKILL and rerun must end with exactly the rows of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from helpers import SCRIPTED_SERVER, rows_of

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import stable_id

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FAST = {"num_fewshot": 0, "max_new_tokens": 8, "batch_size": 32, "progress": False}


def run(stage: str, input: Path, output: Path, **options) -> dict:
    from lightning_selfalign.stages import generate_command

    generate_command(stage=stage, input=str(input), output=str(output), **options)
    return json.loads(output.with_name(output.name.replace(".jsonl", ".stats.json")).read_text())


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """36 real seed functions mined from a few standard-library modules by ``selfalign seeds``."""
    from lightning_selfalign.seeds import mine_seeds_command

    output = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    files = ["statistics.py", "difflib.py", "fractions.py", "textwrap.py", "colorsys.py", "heapq.py", "bisect.py"]
    mine_seeds_command(source=[str(STDLIB / f) for f in files], output=str(output), workers=1, type_check=False,
                       decontaminate=False, max_seeds=36)  # fmt: skip
    assert len(rows_of(output)) == 36
    return output


@pytest.fixture(scope="module")
def canned_server():
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTED_SERVER), "--junk_every=7", "--length_every=9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert " on http" in line, line
    yield line.strip().rsplit(" ", 1)[1]
    process.kill()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def canned_chain(seeds, canned_server, tmp_path_factory) -> dict[str, Path]:
    """seeds -> concepts -> instructions -> responses (n=3) through the openai engine and the canned server."""
    out = tmp_path_factory.mktemp("canned")
    options = {"engine": "openai", "model": "scripted", "base_url": canned_server, "progress": False}
    paths = {"seeds": seeds}
    for previous, stage in (("seeds", "concepts"), ("concepts", "instructions"), ("instructions", "responses")):
        paths[stage] = out / f"{stage}.jsonl"
        run(stage, paths[previous], paths[stage], n=3 if stage == "responses" else None, **options)
    return paths


def check_lineage(stage: str, rows: list[dict], parents: list[dict], n: int) -> None:
    by_id = {row["id"]: row for row in parents}
    for row in rows:
        assert row["parent_id"] in by_id, f"{stage} row {row['id']} has no parent"
        assert row["id"] == stable_id(row["parent_id"], stage, row["sample_index"])
        assert 0 <= row["sample_index"] < n and row["round"] == 0
        parent = by_id[row["parent_id"]]
        assert row["seed"] == parent["seed"], "every row carries its seed function along"
    assert len({row["fingerprint"] for row in rows}) == 1
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.timeout(300)
def test_canned_chain_keeps_valid_rows_with_lineage(canned_chain):
    from lightning_selfalign.prompts import CATEGORIES, DIFFICULTIES

    rows = {stage: rows_of(path) for stage, path in canned_chain.items()}
    assert len(rows["concepts"]) >= 20 and len(rows["instructions"]) >= 15 and len(rows["responses"]) >= 30
    check_lineage("concepts", rows["concepts"], rows["seeds"], 1)
    check_lineage("instructions", rows["instructions"], rows["concepts"], 1)
    check_lineage("responses", rows["responses"], rows["instructions"], 3)
    assert all(row["concepts"] and all(isinstance(c, str) for c in row["concepts"]) for row in rows["concepts"])
    assert all(row["category"] in CATEGORIES and row["difficulty"] in DIFFICULTIES for row in rows["instructions"])
    assert all(row["code"] and "assert" in row["tests"] and row["response"] for row in rows["responses"])
    assert all(row["finish_reason"] == "stop" for row in rows["responses"])
    # A response traces back to its seed through every stage.
    concepts = {row["id"]: row for row in rows["concepts"]}
    instructions = {row["id"]: row for row in rows["instructions"]}
    seeds = {row["id"]: row for row in rows["seeds"]}
    for response in rows["responses"]:
        instruction = instructions[response["parent_id"]]
        assert response["instruction"] == instruction["instruction"]
        assert seeds[concepts[instruction["parent_id"]]["parent_id"]]["source"] == response["source"]


@pytest.mark.timeout(300)
def test_canned_chain_counts_every_sample(canned_chain):
    reasons = set()
    for previous, stage, n in (
        ("seeds", "concepts", 1),
        ("concepts", "instructions", 1),
        ("instructions", "responses", 3),
    ):
        stats = json.loads(canned_chain[stage].with_name(f"{stage}.stats.json").read_text())
        inputs = len(rows_of(canned_chain[previous]))
        assert stats["rows_in"] == inputs and stats["samples"] == inputs * n
        assert stats["kept"] == len(rows_of(canned_chain[stage]))
        assert stats["kept"] + sum(stats["dropped"].values()) == inputs * n
        dropped = rows_of(canned_chain[stage].with_name(f"{stage}.dropped.jsonl"))
        assert len(dropped) == sum(stats["dropped"].values())
        assert stats["engine"]["requests"] - stats["engine"]["retries"] == inputs * n
        reasons |= set(stats["dropped"])
    assert "length" in reasons and len(reasons & {"no_concepts", "empty_instruction", "no_code_block"}) >= 2


@pytest.mark.timeout(300)
def test_rerun_of_a_finished_stage_does_nothing(canned_chain, canned_server):
    stats = run("responses", canned_chain["instructions"], canned_chain["responses"], n=3, engine="openai",
                model="scripted", base_url=canned_server, progress=False)  # fmt: skip
    assert stats["samples"] == 0 and stats["rows_already_done"] == stats["rows_in"]
    assert stats["totals"]["kept"] == len(rows_of(canned_chain["responses"]))


@pytest.mark.timeout(300)
def test_changed_settings_do_not_mix_into_an_output(canned_chain, canned_server):
    from lightning_selfalign.errors import UserError

    with pytest.raises(UserError, match="holds rows made with other settings"):
        run("responses", canned_chain["instructions"], canned_chain["responses"], n=3, engine="openai",
            model="scripted", base_url=canned_server, temperature=0.2, progress=False)  # fmt: skip


@pytest.mark.timeout(300)
def test_hf_engine_runs_every_stage(seeds, canned_chain, tiny_model_dir, tmp_path):
    """Each stage on >= 20 rows with the tiny model: every sample written or dropped with a counted reason."""
    model = str(tiny_model_dir)
    for previous, stage, n in (
        ("seeds", "concepts", 1),
        ("concepts", "instructions", 1),
        ("instructions", "responses", 2),
    ):
        inputs = rows_of(canned_chain[previous])
        assert len(inputs) >= 20
        output = tmp_path / f"{stage}.jsonl"
        stats = run(stage, canned_chain[previous], output, engine="hf", model=model, n=n, **FAST)
        assert stats["samples"] == len(inputs) * n
        assert stats["kept"] + sum(stats["dropped"].values()) == stats["samples"]
        assert len(rows_of(output)) == stats["kept"]
        dropped = rows_of(tmp_path / f"{stage}.dropped.jsonl")
        assert sorted(d["parent_id"] for d in dropped + rows_of(output)) == sorted(
            row["id"] for row in inputs for _ in range(n)
        )
        assert stats["tokens"] > 0 and stats["dropped"], "junk from random weights is dropped and counted"


def _instruction_rows(path: Path, count: int) -> Path:
    rows = [
        {"id": f"i{k}", "instruction": f"Write a function f{k} that returns {k} plus its argument."}
        for k in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _lines(*paths: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in paths if path.exists())


@pytest.mark.timeout(400)
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    instructions = _instruction_rows(tmp_path / "instructions.jsonl", 16)
    options = {"engine": "hf", "model": str(tiny_model_dir), "n": 2, "max_new_tokens": 8, "num_fewshot": 0}
    killed = tmp_path / "killed.jsonl"
    args = [f"--{key}={value}" for key, value in {**options, "batch_size": 4, "progress": False}.items()]
    command = [sys.executable, "-m", "lightning_selfalign", "generate", "--stage=responses",
               f"--input={instructions}", f"--output={killed}", *args]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dropped = killed.with_name("killed.dropped.jsonl")
    deadline = time.monotonic() + 300
    while _lines(killed, dropped) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    written_before_kill = _lines(killed, dropped)
    assert process.returncode == -signal.SIGKILL and 0 < written_before_kill < 32, process.stderr.read()

    stats = run("responses", instructions, killed, batch_size=4, progress=False, **options)
    assert stats["samples"] == 32 - written_before_kill

    reference = tmp_path / "reference.jsonl"
    run("responses", instructions, reference, batch_size=7, progress=False, **options)  # other batches, same rows
    for mine, theirs in ((killed, reference), (dropped, reference.with_name("reference.dropped.jsonl"))):
        got, want = rows_of(mine), rows_of(theirs)
        assert len({row["id"] for row in got}) == len(got), "no row written twice"
        assert sorted(got, key=lambda row: row["id"]) == sorted(want, key=lambda row: row["id"])
    assert _lines(killed, dropped) == 32


@pytest.mark.timeout(300)
def test_chat_mode_through_both_engines(seeds, canned_chain, canned_server, tiny_model_dir, tmp_path):
    """--chat: messages go to /v1/chat/completions (openai) or through the tokenizer's chat template (hf)."""
    stats = run("concepts", seeds, tmp_path / "concepts.jsonl", engine="openai", model="scripted",
                base_url=canned_server, chat=True, progress=False)  # fmt: skip
    assert stats["kept"] >= 20 and stats["settings"]["chat"] is True
    first = tmp_path / "five.jsonl"
    first.write_text("".join(json.dumps(row) + "\n" for row in rows_of(canned_chain["concepts"])[:5]))
    stats = run("instructions", first, tmp_path / "instructions.jsonl", engine="hf", model=str(tiny_model_dir),
                chat=True, **{**FAST, "num_fewshot": 1, "max_new_tokens": 4})  # fmt: skip
    assert stats["samples"] == 5 and stats["tokens"] > 0


@pytest.mark.timeout(300)
def test_shards_together_equal_one_unsharded_run(seeds, canned_chain, canned_server, tmp_path):
    options = {"engine": "openai", "model": "scripted", "base_url": canned_server, "progress": False}
    from lightning_selfalign.stages import generate_command

    for index in range(3):
        generate_command(stage="concepts", input=str(seeds), output=str(tmp_path / "c.jsonl"), shard=f"{index}/3",
                         **options)  # fmt: skip
    parts = [rows_of(tmp_path / f"c.shard-{i:05d}-of-00003.jsonl") for i in range(3)]
    assert all(parts) and not (tmp_path / "c.jsonl").exists()
    merged = sorted((row for part in parts for row in part), key=lambda row: row["id"])
    assert merged == sorted(rows_of(canned_chain["concepts"]), key=lambda row: row["id"])


def test_instructions_draw_only_the_task_kinds_and_difficulties_asked_for(canned_chain, canned_server, tmp_path):
    options = {"engine": "openai", "model": "scripted", "base_url": canned_server, "progress": False}
    output = tmp_path / "instructions.jsonl"
    stats = run("instructions", canned_chain["concepts"], output, categories=["function"], difficulties=["hard"],
                **options)  # fmt: skip
    rows = rows_of(output)
    assert rows and {(row["category"], row["difficulty"]) for row in rows} == {("function", "hard")}
    default = rows_of(canned_chain["instructions"])
    assert {row["category"] for row in default} == {"function"}, "StarCoder2-Instruct writes functions only"
    assert rows[0]["fingerprint"] != default[0]["fingerprint"], "the restriction is part of the rows' settings"
    with pytest.raises(UserError, match="--difficulties"):
        run("instructions", canned_chain["concepts"], tmp_path / "x.jsonl", difficulties=["extreme"], **options)
    assert stats["kept"] == len(rows)
