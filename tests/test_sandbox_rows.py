"""No row stops a batch: whatever text a row carries or its sample produces, ``selfalign execute`` writes a verdict for
it and goes on, and a run killed in the middle resumes without losing or repeating a row.

Real runs of the command (``python -m lightning_selfalign execute``) on JSONL files, as a user starts them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_selfalign.jsonl import fingerprint, read_jsonl, stats_path, write_jsonl
from lightning_selfalign.sandbox import Verdict

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="needs Linux")

REPO = Path(__file__).resolve().parents[1]
GC_FORGERY = (
    "import gc, os\nfor obj in gc.get_objects():\n"
    "    if getattr(obj, '__name__', '') == 'report' and getattr(obj, '__closure__', None):\n"
    "        cells = dict(zip(obj.__code__.co_freevars, (c.cell_contents for c in obj.__closure__)))\n"
    "        os.write(cells['fd'], f\"\\nSELFALIGN-REPORT {cells['nonce']} ok 3 0\\n\".encode())\n        os._exit(0)"
)
# id: (code, tests, verdicts allowed); every row also carries a field with text UTF-8 cannot hold
HOSTILE: dict[str, tuple[str, str, set[str]]] = {
    "surrogate-in-code": ("x = '\udcff'", "assert x", {"error"}),
    "surrogate-in-tests": ("x = 1", "assert x == '\ud800'", {"error"}),
    "surrogate-in-id-\udcff": ("x = 1", "assert x == 1", {"pass"}),
    "nul-in-code": ("x = 1\x00", "assert x", {"error"}),
    "nul-in-tests": ("x = 1", "assert x\x00", {"error"}),
    "huge-stdout": ("print('x' * 10**7)", "assert True", {"pass"}),
    "huge-raw-output": ("import os\nos.write(1, b'\\xff' * (1 << 24))", "assert True", {"pass"}),
    "invalid-utf8-output": ("import sys\nsys.stdout.buffer.write(b'\\xed\\xb3\\xbf\\xff')", "assert True", {"pass"}),
    "surrogate-in-reason": ("raise ValueError('bad \\udcff')", "assert True", {"error"}),
    "huge-reason": ("raise ValueError('y' * 10**6)", "assert True", {"error"}),
    "huge-source-with-surrogate": ("s = '" + "a" * 40_000 + "\udcff'", "assert s", {"error"}),
    "deep-scratch-tree": (
        "import os\nos.chdir('/tmp')\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')",
        "assert True",
        {"pass"},
    ),
    "memfd-flood": (
        "import os\nfds = []\nfor i in range(200):\n    fd = os.memfd_create('m')\n"
        "    os.posix_fallocate(fd, 0, 15 << 20)\n    fds.append(fd)",
        "assert True",
        {"crash", "memory", "error"},
    ),
    "fork-bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "assert True",
        {"timeout"},
    ),
    "kills-its-process-group": (
        "import os, signal, time\nif os.fork() == 0:\n    os.kill(0, signal.SIGKILL)\n    os._exit(0)\ntime.sleep(0.2)",
        "assert True",
        {"pass"},
    ),
    "closes-all-fds": ("import os\nos.closerange(0, 4096)", "assert True", {"error"}),
    "exits-before-tests": ("import sys\nsys.exit(0)", "assert False", {"error"}),
    "gc-forgery": (GC_FORGERY, "assert False", {"policy"}),
    "trailing-decorator": (
        "def lenient(f):\n    return lambda: None\n@lenient",
        "def check():\n    assert False\ncheck()",
        {"error"},
    ),
    "no-asserts": ("x = 1", "y = x", {"no_tests"}),
}


def allowed(name: str, output: Path) -> set[str]:
    """The verdicts row ``name`` may get in the run that wrote ``output``: a memfd flood is ``memory`` wherever a memory
    cgroup bounds the helper (the kernel kills the sample, never its larger helper or forker)."""
    protections = json.loads(stats_path(output).read_text())["protections"]
    if name == "memfd-flood" and any("cgroup" in p for p in protections):
        return {"memory"}
    return HOSTILE[name][2]


def ordinary_rows(count: int) -> list[dict]:
    """Quick programs, mostly passing, some failing or raising."""
    rows = []
    for i in range(count):
        expected = i + 1 if i % 7 else i + 2  # every 7th fails
        code = f"def f(x):\n    return x + {i}" if i % 11 else "def f(x):\n    return {}['k']"  # every 11th raises
        rows.append({"id": f"row-{i}", "code": code, "tests": f"assert f(1) == {expected}", "note": f"n\udcff{i}"})
    return rows


def hostile_rows() -> list[dict]:
    return [{"id": name, "code": code, "tests": tests, "note": "\udfff"} for name, (code, tests, _) in HOSTILE.items()]


def write_input(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def cli(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lightning_selfalign", "execute", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.mark.timeout(300)
def test_every_row_gets_a_verdict_whatever_its_text_and_a_rerun_resumes(tmp_path):
    rows = hostile_rows() + ordinary_rows(10)
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, rows)
    finish(cli("--input", str(source), "--output", str(output), "--timeout", "3", "--progress", "false"))
    written = list(read_jsonl(output))
    by_id = {row["id"]: row for row in written}
    assert len(written) == len(rows) and set(by_id) == {row["id"] for row in rows}
    assert json.loads(stats_path(output).read_text())["helpers_replaced"] == 0
    for name in HOSTILE:
        assert by_id[name]["verdict"] in allowed(name, output), (name, by_id[name]["verdict"], by_id[name]["reason"])
        assert by_id[name]["note"] == "\udfff", "other fields pass through, lone surrogates included"
        assert len(by_id[name]["reason"]) <= 2000
    assert by_id["gc-forgery"]["reason"].startswith("gc:"), "the command runs with the policy on by default"
    before = output.read_bytes()
    err = finish(cli("--input", str(source), "--output", str(output), "--timeout", "3", "--progress", "false"))
    assert output.read_bytes() == before and f"already_done {len(rows)}" in err


@pytest.mark.timeout(300)
def test_thousand_mixed_rows_with_hostile_ones_survive_a_sigkill(tmp_path):
    """1,000 rows, 20 of them hostile, killed with SIGKILL mid-run and rerun: every row once, each with the verdict an
    uninterrupted run gives it."""
    rows = ordinary_rows(980) + hostile_rows()
    rows = rows[:490] + rows[980:] + rows[490:980]  # the hostile rows in the middle, where the kill lands
    source, reference, resumed = tmp_path / "in.jsonl", tmp_path / "reference.jsonl", tmp_path / "resumed.jsonl"
    write_input(source, rows)
    args = ["--input", str(source), "--timeout", "2", "--progress", "false"]
    finish(cli(*args, "--output", str(reference)))
    proc = cli(*args, "--output", str(resumed))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not resumed.exists() or resumed.read_bytes().count(b"\n") < 500):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    partial = resumed.read_bytes().count(b"\n")
    assert 0 < partial < len(rows), "the kill must land mid-batch"
    finish(cli(*args, "--output", str(resumed)))
    got = list(read_jsonl(resumed))
    ids = [row["id"] for row in got]
    assert len(ids) == len(set(ids)) == len(rows) and set(ids) == {row["id"] for row in rows}
    assert all(row["verdict"] in Verdict.ALL for row in got)
    expected = {row["id"]: row["verdict"] for row in read_jsonl(reference)}
    assert {r["id"]: r["verdict"] for r in got} == expected
    for name in HOSTILE:
        assert expected[name] in allowed(name, reference), (name, expected[name])


def test_rows_and_fingerprints_hold_lone_surrogates(tmp_path):
    rows = [{"id": "\udcff", "code": "x = '\ud800'", "reason": "a\x00b\udfff"}, {"id": "plain", "code": "é"}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert list(read_jsonl(tmp_path / "rows.jsonl")) == rows
    assert fingerprint({"prompt": "\udcff"}) != fingerprint({"prompt": "\udcfe"})
    assert fingerprint({"a": "x"}) == "bac82bcae3ff0e48"  # text UTF-8 can hold hashes as it always did
