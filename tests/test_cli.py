"""The console script as a user meets it: every command listed, and one-line errors for common mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
