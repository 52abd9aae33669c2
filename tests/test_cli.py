"""The console script as a user meets it: every command listed, and one-line errors for common mistakes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import fit_args, write_sft

from lightning_selfalign.cli import COMMANDS


def selfalign(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_selfalign", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)  # fmt: skip


def test_usage_lists_every_command():
    result = selfalign("--help")
    assert result.returncode == 0
    for command in [*COMMANDS, "fit", "validate"]:
        assert command in result.stdout


@pytest.mark.parametrize("command", ["execute", "curate", "generate"])
def test_output_equal_to_input_is_refused(command, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"id": "a", "code": "x = 1", "tests": "assert x == 1", "instruction": "i", "seed": "s"}\n')
    extra = ["--stage", "concepts", "--model", "unused"] if command == "generate" else []
    result = selfalign(command, "--input", str(data), "--output", str(data), *extra)
    assert result.returncode == 2
    expected = f"error: --output {data} is also an --input file; write to a new file"
    assert result.stderr.strip().splitlines()[-1] == expected
    assert "Traceback" not in result.stderr


def test_unknown_option_is_one_line():
    result = selfalign("execute", "--inptu", "x", "--output", "y")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unrecognized arguments: --inptu x (see: selfalign execute --help)"


def test_wrong_field_type_names_file_and_line(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"id": "a", "code": "x = 1", "tests": "assert x"}\n{"id": "b", "code": 3, "tests": "assert 1"}\n')
    result = selfalign("execute", "--input", str(data), "--output", str(tmp_path / "out.jsonl"), "--progress", "false")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {data}:2: field 'code' must be str, got int"


def test_curate_progress_false_is_silent(tmp_path):
    data = tmp_path / "executed.jsonl"
    code = "def f(a, b):\n    return a + b"
    row = {"id": "r1", "parent_id": "i1", "instruction": "Add.", "response": f"```python\n{code}\n```", "code": code,
           "tests": "assert f(1, 2) == 3", "verdict": "pass", "tests_run": 1}  # fmt: skip

    data.write_text(json.dumps(row) + "\n")
    result = selfalign("curate", "--input", str(data), "--output", str(tmp_path / "sft.jsonl"), "--progress", "false")
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr, result.stderr


def test_outputs_named_by_a_folder_and_impossible_counts_are_one_line_errors(tmp_path):
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.evaluation.command import evaluate_command
    from lightning_selfalign.sandbox.batch import execute_command
    from lightning_selfalign.seeds import mine_seeds_command
    from lightning_selfalign.serve import serve

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "code": "x = 1", "tests": "assert x"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "tests": "assert x"}\n')
    cases = [
        (lambda: execute_command(input=str(bad), output=str(tmp_path / "out.jsonl")), "missing field"),
        (lambda: mine_seeds_command(source=str(rows), output=str(tmp_path)), "--output .* is a folder"),
        (lambda: mine_seeds_command(source=str(rows), max_seeds=-1), "--max_seeds must be at least 1"),
        (lambda: execute_command(input=str(rows), output=str(tmp_path)), "--output .* is a folder"),
        (lambda: evaluate_command(output=str(tmp_path), samples=str(rows)), "--output .* is a folder"),
        (lambda: evaluate_command(output=str(tmp_path / "r.json"), model="m", ks=[10]),
         "--ks 10 needs at least 10 samples per task, and --n is 1"),
        (lambda: serve(model="m", port=99999), "--port must be in 0-65535"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.jsonl", "rows.jsonl"], "nothing half-written"


@pytest.mark.timeout(300)
def test_fit_mistakes_are_one_line_and_a_finished_fit_says_where_it_saved(tiny_model_dir, tmp_path):
    data = write_sft(tmp_path / "sft.jsonl", 12)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x04 not a checkpoint")
    args = fit_args(tiny_model_dir, data, tmp_path / "run", "--data.max_length", "96", "--trainer.max_steps", "2")
    cases = [
        (["--ckpt_path", str(tmp_path / "missing.ckpt")], "error: --ckpt_path .*missing.ckpt: no such file"),
        (["--ckpt_path", str(corrupt)], "error: --ckpt_path .*corrupt.ckpt: not a PyTorch checkpoint"),
        (["--optimizer", "AdamW"], "error: .*--optimizer.*; the optimizer and schedule are --model.optimizer"),
    ]
    for extra, message in cases:
        result = selfalign(*args, *extra)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and re.match(message, lines[0]), result.stderr[-2000:]
        assert "Traceback" not in result.stderr

    # A config's validation interval longer than this small data set's epoch: clamped with a warning, no crash.
    validating = ["--data.val_fraction", "0.25", "--trainer.limit_val_batches", "1.0", "--trainer.val_check_interval",
                  "20", "--trainer.enable_checkpointing", "true"]  # fmt: skip
    result = selfalign(*args, *validating)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validating every" in result.stderr
    assert "💡" not in result.stderr + result.stdout and "tensorboardX" not in result.stderr
    assert not re.search(r"\.py:\d+: ", result.stderr), result.stderr[-3000:]  # warnings without source paths
    done = [line for line in result.stdout.splitlines() if line.startswith("fit done:")]
    assert len(done) == 1 and "checkpoint" in done[0] and "logs" in done[0], result.stdout[-2000:]

    folder_file = tmp_path / "a-file"
    folder_file.write_text("x")
    result = selfalign("export", "--ckpt_path", str(corrupt), "--output_dir", str(folder_file))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --output_dir {folder_file} is a file; name a folder"


@pytest.mark.timeout(300)
def test_self_align_checks_model_training_config_and_settings_before_any_work(tiny_model_dir, tmp_path):
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.rounds.command import self_align_command
    from lightning_selfalign.rounds.settings import GenerationOptions, RoundSettings, save_settings

    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml")
    workdir = tmp_path / "run"
    cases = [
        (dict(model=str(tmp_path / "no-model")), r"--model .*no-model: cannot load a model config"),
        (dict(model=str(tiny_model_dir), train_args=["--trainer.max_stepz=3"]),
         r"--train_config / --train_args: .*max_stepz"),
    ]  # fmt: skip
    for given, message in cases:
        with pytest.raises(UserError, match=message):
            self_align_command(train_config=config, workdir=str(workdir), **given)
        assert not workdir.exists(), "nothing written before the checks pass"

    save_settings(workdir, RoundSettings(model=str(tiny_model_dir), train_config=config))
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    with pytest.raises(
        UserError,
        match=r"was started with other settings \(model: .* -> .*other-model'; "
        r"generation.temperature: None -> 0.3\); use a new --workdir, or --force",
    ):
        self_align_command(model=str(other), train_config=config, workdir=str(workdir),
                           generation=GenerationOptions(temperature=0.3))  # fmt: skip


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    from lightning_selfalign.jsonl import write_jsonl

    def rows():
        yield {"id": 1}
        raise RuntimeError("the producer failed")

    (tmp_path / "out.jsonl").write_text('{"id": 0}\n')
    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", rows())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    assert (tmp_path / "out.jsonl").read_text() == '{"id": 0}\n', "the previous file is untouched"


def test_a_list_option_takes_one_value_or_several_without_brackets():
    result = selfalign("evaluate", "--ks", "1", "--ks=10", "--print_config")
    assert result.returncode == 0, result.stderr
    assert "ks:\n- 1\n- 10\n" in result.stdout
    result = selfalign("evaluate", "--ks", "[1, 5]", "--print_config")
    assert "ks:\n- 1\n- 5\n" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed here")
def test_a_logger_without_its_package_is_one_line(tiny_model_dir, tmp_path):
    data = write_sft(tmp_path / "sft.jsonl", 4)
    args = fit_args(tiny_model_dir, data, tmp_path / "run", "--trainer.max_steps", "1")
    args[args.index("lightning.pytorch.loggers.CSVLogger")] = "lightning.pytorch.loggers.TensorBoardLogger"
    result = selfalign(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: lightning.pytorch.loggers.TensorBoardLogger: Neither `tensorboard` nor `tensorboardX` is "
        "available. Try `pip install`ing either.; pip install 'lightning-selfalign[tensorboard]'"
    ]


def test_generate_help_names_every_field_each_stage_reads():
    from lightning_selfalign.stages import REQUIRED_INPUT

    text = " ".join(selfalign("generate", "--help").stdout.split())
    for stage, fields in REQUIRED_INPUT.items():
        assert f"{stage} (reads {', '.join(fields)}" in text


def options_without_description(help_text: str) -> list[str]:
    """The options of an argparse help text whose entry holds nothing but jsonargparse's '(type: ..., default: ...)'."""
    block = help_text.split("options:", 1)[-1]
    missing = []
    for entry in re.split(r"\n(?=  -)", block):
        lines = entry.strip().splitlines()
        if not lines or not lines[0].startswith("-"):
            continue
        name = lines[0].split()[0].rstrip(",")
        first = lines[0].split("  ", 1)[1] if "  " in lines[0] else ""
        text = " ".join((first + " " + " ".join(lines[1:])).split())
        text = re.sub(r"\((type|default):.*\)$", "", text).strip()
        if not text and name not in ("-h", "--config", "--print_config"):
            missing.append(name)
    return missing


def test_the_help_check_finds_an_option_without_description():
    text = "options:\n  --foo FOO             (type: int, default: 1)\n  --bar BAR  bar it. (type: int)\n"
    assert options_without_description(text + "  --baz {a,b}\n                        (type: str, default: a)\n") == [
        "--foo",
        "--baz",
    ]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_every_command_has_a_description(command, capsys):
    """`selfalign COMMAND --help`: each option says what it does, not only its type and default."""
    from lightning_selfalign.cli import run_command

    with pytest.raises(SystemExit):
        run_command(command, ["--help"])
    help_text = capsys.readouterr().out
    assert "options:" in help_text
    assert options_without_description(help_text) == []
