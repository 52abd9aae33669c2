"""Hostile samples: each attacks one property of the sandbox.

All cases run as ONE batch through :func:`execute_rows` on a shared pool (2 helpers, 2 s timeout), with a
canary directory, a loopback listener and a secret environment variable set up on the host first. Each
parametrised test then checks one case's verdict and elapsed time, and that the host is unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lightning_selfalign.sandbox import Limits, SandboxPool
from lightning_selfalign.sandbox.batch import execute_rows

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="needs Linux")

TIMEOUT = 2.0
SECRET = "hunter2-selfalign-secret"
CANARY_DIR = Path(f"/var/tmp/selfalign-canary-{os.getpid()}")
CANARY = CANARY_DIR / "canary.txt"
PORT_HOLDER: dict[str, int] = {}

TIMEOUT_CASES = {
    "infinite_loop": ("while True:\n    pass", "assert True"),
    "loop_swallows_timeout": (
        "import signal\nwhile True:\n    try:\n        while True:\n            pass\n    except BaseException:\n"
        "        pass",
        "assert True",
    ),
    "long_c_call": ("total = sum(range(10**12))", "assert total"),
    "ignores_sigterm_sigalrm": (
        "import signal, time\nfor s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\nsignal.alarm(1)\nwhile True:\n    time.sleep(0.01)",
        "assert True",
    ),
    "sleep_forever": ("import time\ntime.sleep(1000)", "assert True"),
    "fork_bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "assert True",
    ),
    "unbounded_stdout": ("while True:\n    print('x' * 4096)", "assert True"),
    "unbounded_stderr": ("import sys\nwhile True:\n    sys.stderr.write('y' * 4096)", "assert True"),
}

CASES: dict[str, tuple[str, str, set[str]]] = {
    **{name: (code, tests, {"timeout"}) for name, (code, tests) in TIMEOUT_CASES.items()},
    # processes
    "double_fork_setsid_daemon": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        while True:\n            time.sleep(0.05)\n    os._exit(0)\n",
        "assert True",
        {"pass"},
    ),
    "threads_never_end_pass": (
        "import threading\nthreading.Thread(target=lambda: [None for _ in iter(int, 1)]).start()",
        "assert True",
        {"pass"},
    ),
    "threads_never_end_fail": (
        "import threading\nthreading.Thread(target=lambda: [None for _ in iter(int, 1)]).start()",
        "assert False",
        {"fail"},
    ),
    # getppid() is 0 (the parent is outside the namespace): kill(0) hits its own group, where PID 1 is immune
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "assert False", {"fail", "crash"}),
    "kill_minus_one": (
        "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass",
        "assert True",
        {"pass"},
    ),
    "kill_every_pid": (
        "import os, signal\nfor pid in range(2, 5000):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass",
        "assert True",
        {"pass"},
    ),
    "cannot_see_parent": ("import os", "assert os.getpid() == 1 and os.getppid() == 0", {"pass"}),
    # no fd of the helper or its forker is inherited: stdio, the listing's own fd and the report pipe (1023) only
    "only_own_fds": (
        "import os\nfds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))",
        "assert fds == [0, 1, 2, 3, 1023], fds",
        {"pass"},
    ),
    # memory
    "memory_bomb": ("x = bytearray(8 * 1024**3)", "assert x", {"memory"}),
    "memory_bomb_gradual": ("chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)", "assert True", {"memory"}),
    # output and input
    "large_legit_output": ("for i in range(20000):\n    print('line', i, 'x' * 40)", "assert True", {"pass"}),
    "binary_output": ("import os\nos.write(1, bytes(range(256)) * 64)", "assert True", {"pass"}),
    "invalid_utf8_output": ("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\xc3(')", "assert True", {"pass"}),
    "invalid_utf8_exception": ("raise ValueError('bad \\udcff byte')", "assert True", {"error"}),
    "read_stdin": ("import sys\ndata = sys.stdin.read()", "assert data == ''", {"pass"}),
    "input_call": ("x = input()", "assert x", {"error"}),
    # early exits and forgery
    "sys_exit_0": ("import sys\nsys.exit(0)", "assert False", {"error"}),
    "os_exit_0": ("import os\nos._exit(0)", "assert False", {"error"}),
    "atexit_os_exit": ("import atexit, os\natexit.register(os._exit, 0)", "assert False", {"fail"}),
    "finally_os_exit": ("import os", "try:\n    assert False\nfinally:\n    os._exit(0)", {"error"}),
    "exec_bin_true": ("import os", "os.execv('/bin/true', ['true'])\nassert False", {"error"}),
    "exit_after_first_assert": ("import sys", "assert True\nsys.exit(0)\nassert False", {"error"}),
    "forged_report_all_fds": (
        "import os\nfor fd in range(1, 1100):\n    try:\n"
        "        os.write(fd, b'\\nSELFALIGN-REPORT probe ok 9 0\\n')\n    except OSError:\n        pass\nos._exit(0)",
        "assert False",
        {"error"},
    ),
    "monkeypatched_os": ("import os\nos.write = lambda *a: 0\nos._exit = lambda *a: None", "assert False", {"fail"}),
    "replaced_assertion_error": ("import builtins\nbuiltins.AssertionError = SystemExit", "assert False", {"fail"}),
    "closes_all_fds": ("import os\nos.closerange(0, 4096)", "assert True", {"error"}),
    # host files
    "delete_host_file": ("import os", f"os.remove({str(CANARY)!r})\nassert True", {"error"}),
    "overwrite_host_file": ("", f"open({str(CANARY)!r}, 'w').write('pwned')\nassert True", {"error"}),
    "create_host_file": ("", f"open({str(CANARY_DIR / 'new.txt')!r}, 'w').write('x')\nassert True", {"error"}),
    "fill_disk_one_file": (
        "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 2**20)",
        "assert True",
        {"error"},
    ),
    "fill_disk_many_files": (
        "i = 0\nwhile True:\n    open(f'f{i}.bin', 'wb').write(b'0' * 2**20)\n    i += 1",
        "assert True",
        {"error"},
    ),
    "scratch_write_read": (
        "open('notes.txt', 'w').write('hello')",
        "assert open('notes.txt').read() == 'hello'",
        {"pass"},
    ),
    # network, environment
    "connect_host_listener": (
        "import socket",
        "socket.create_connection(('127.0.0.1', PORT), timeout=1).sendall(b'x')\nassert True",
        {"error"},
    ),
    "reads_secret_env": ("import os", f"assert {SECRET!r} not in repr(dict(os.environ))", {"pass"}),
    "reads_other_environ": (
        "import os\nfound = []\nfor pid in os.listdir('/proc'):\n    for name in ('environ', 'cmdline'):\n"
        "        try:\n            found.append(open(f'/proc/{pid}/{name}', 'rb').read())\n"
        "        except OSError:\n            pass",
        f"assert not any({SECRET!r}.encode() in blob for blob in found)",
        {"pass"},
    ),
    # crashes
    "deep_recursion": ("def f(n):\n    return f(n + 1)", "assert f(0)", {"error"}),
    "ctypes_segfault": ("import ctypes", "ctypes.string_at(0)\nassert True", {"crash"}),
    "c_stack_overflow": (
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)",
        "assert f(0)",
        {"crash", "error", "memory", "timeout"},
    ),
    "huge_source": (
        "s = '" + "a" * 4_000_000 + "'\n" + "\n".join(f"x{i} = {i}" for i in range(5000)),
        "assert len(s) == 4_000_000 and x4999 == 4999",
        {"pass"},
    ),
    "deeply_nested_source": ("x = " + "(" * 5000 + "1" + ")" * 5000, "assert x", {"error"}),
    "syntax_error": ("def f(:\n    pass", "assert f", {"error"}),
    # correct but tricky programs
    "recursion": ("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)", "assert fib(15) == 610", {"pass"}),
    "helpers": (
        "def _square(x):\n    return x * x\n\ndef total(xs):\n    return sum(_square(x) for x in xs)",
        "assert total([1, 2, 3]) == 14",
        {"pass"},
    ),
    "import_inside_function": (
        "def root(x):\n    import math\n    return math.isqrt(x)",
        "assert root(17) == 4",
        {"pass"},
    ),
    "module_import_used_in_function": (
        "import collections\n\ndef count(s):\n    return collections.Counter(s)['a']",
        "assert count('banana') == 3",
        {"pass"},
    ),
    "classes_and_pickle": (
        "import dataclasses, pickle\n\n@dataclasses.dataclass\nclass Point:\n    x: int\n    y: int\n\n"
        "    def norm1(self):\n        return abs(self.x) + abs(self.y)",
        "p = pickle.loads(pickle.dumps(Point(3, -4)))\nassert p.norm1() == 7",
        {"pass"},
    ),
    "main_block_does_not_run": (
        "def main():\n    return 42\n\nif __name__ == '__main__':\n    RESULT = main()",
        "assert main() == 42 and 'RESULT' not in globals() and __name__ == 'main'",
        {"pass"},
    ),
    "main_block_sys_exit_main": (
        "import sys\ndef main():\n    print('done')\n    return 0\nif __name__ == '__main__':\n    sys.exit(main())",
        "assert main() == 0",
        {"pass"},
    ),
    "main_block_reads_input": (
        "def main():\n    name = input()\n    print('hi', name)\nif __name__ == '__main__':\n    main()",
        "assert callable(main)",
        {"pass"},
    ),
    "future_import_first": (
        "from __future__ import annotations\n\ndef f(x: Undefined) -> list[int]:\n    return [x]",
        "assert f(1) == [1]",
        {"pass"},
    ),
    "no_asserts": ("x = 1", "y = x + 1", {"no_tests"}),
    # verdicts a model could learn to game (second pass), and rows that stopped a batch
    "trailing_decorator_wraps_check": (
        "def lenient(f):\n    def g(*a):\n        try:\n            return f(*a)\n        except AssertionError:\n"
        "            pass\n    return g\n@lenient",
        "def check():\n    assert False\ncheck()",
        {"error"},
    ),
    "lone_cr_asserts_in_code": ("x = 1\rassert x\rassert x", "y = x + 1", {"no_tests"}),
    "crlf_source_passes": ("def f(x):\r\n    return x\r\n", "assert f(1) == 1\r\nassert f(2) == 2", {"pass"}),
    "forged_status_word": (
        "import gc, os\nfor obj in gc.get_objects():\n"
        "    if getattr(obj, '__name__', '') == 'report' and getattr(obj, '__closure__', None):\n"
        "        cells = dict(zip(obj.__code__.co_freevars, (c.cell_contents for c in obj.__closure__)))\n"
        "        os.write(cells['fd'], f\"\\nSELFALIGN-REPORT {cells['nonce']} banana 5 0\\n\".encode())\n"
        "        os._exit(0)",
        "assert False",
        {"error"},
    ),
    "forked_child_reports_first": (
        "import os\npid = os.fork()",
        "assert True\nif pid:\n    import time\n    time.sleep(0.5)\n    assert False",
        {"fail"},
    ),
    "lone_surrogate_source": ("x = '\udcff'", "assert x", {"error"}),
    "surrogate_output": ("import sys\nsys.stdout.write('\\udcff')", "assert True", {"pass"}),
    "deep_scratch_tree": (
        "import os\nos.chdir('/tmp')\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')",
        "assert os.getcwd().count('/d') == 1200",
        {"pass"},
    ),
    "uncalled_test_function": ("x = 1", "def test_x():\n    assert x == 2", {"no_tests"}),
    # third pass: the sample is no session leader, so its process group holds its helper and forker (each PID 1 of a
    # namespace above it, so the kernel drops the signal); keyrings are not namespaced, so they are closed
    "child_kills_its_process_group": (
        "import os, signal, time\nif os.fork() == 0:\n    os.kill(0, signal.SIGKILL)\n    os._exit(0)\ntime.sleep(0.2)",
        "assert True",
        {"pass"},
    ),
    "kills_its_process_group_by_id": (
        "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)",
        "assert True",
        {"pass"},
    ),
    "keyring_add_key": (
        # add_key(type, description, payload, length, the user keyring)
        "import ctypes, platform\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "key = libc.syscall({'x86_64': 248, 'aarch64': 217}[platform.machine()], b'user', b'left', b'v', 1, -4)",
        "assert key == -1 and ctypes.get_errno() == 1, (key, ctypes.get_errno())",
        {"pass"},
    ),
}


def _listener() -> tuple[socket.socket, list[bytes]]:
    """A TCP listener on the host's loopback that records whatever connects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    received: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            received.append(conn.recv(100) or b"<connected>")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return server, received


def _sandbox_processes(uids: set[int]) -> list[str]:
    """Host processes running as the given sandbox uids."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split() and int(line.split()[0]) in uids]


def _snapshot() -> dict:
    return {"canary": CANARY.read_text(), "listing": sorted(os.listdir(CANARY_DIR))}


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory: pytest.TempPathFactory):
    """Run every case in one batch; yield (results by id, host state before, host state after, listener)."""
    CANARY_DIR.mkdir(exist_ok=True)
    CANARY_DIR.chmod(0o777)  # only the read-only mount, not permissions, keeps samples out
    CANARY.write_text("original")
    CANARY.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH)
    server, received = _listener()
    port = server.getsockname()[1]
    os.environ["SELFALIGN_TEST_SECRET"] = SECRET
    rows = [
        {"id": name, "code": code, "tests": tests.replace("PORT", str(port)), "expect": sorted(expect)}
        for name, (code, tests, expect) in CASES.items()
    ]
    output = tmp_path_factory.mktemp("hostile") / "out.jsonl"
    before = _snapshot()
    limits = Limits(timeout_s=TIMEOUT, memory_mb=512)
    with SandboxPool(workers=2) as pool:
        stats = execute_rows(rows, output, limits, pool=pool, retry_timeouts=False, progress=False)
        uids = {helper.uid for helper in pool.helpers.queue}
        leftover = _sandbox_processes(uids)
    after_close = _sandbox_processes(uids)
    for _ in range(50):  # the helpers die by their parent-death signal, a moment after their bwrap parent
        if not after_close:
            break
        time.sleep(0.1)
        after_close = _sandbox_processes(uids)
    results = {row["id"]: row for row in map(json.loads, output.read_text().splitlines())}
    yield {
        "results": results,
        "before": before,
        "after": _snapshot(),
        "received": received,
        "stats": stats,
        "leftover": leftover,
        "after_close": after_close,
    }
    server.close()
    os.environ.pop("SELFALIGN_TEST_SECRET", None)
    for path in CANARY_DIR.iterdir():
        path.unlink()
    CANARY_DIR.rmdir()


def test_enough_cases():
    assert len(CASES) >= 40


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(hostile_batch, name):
    row = hostile_batch["results"][name]
    assert row["verdict"] in CASES[name][2], f"{name}: {row['verdict']}: {row['reason']}"
    assert row["verdict"] != "pass" or CASES[name][2] == {"pass"}
    assert row["duration_s"] <= TIMEOUT + 1.0, f"{name} took {row['duration_s']} s"
    assert hostile_batch["after"] == hostile_batch["before"], "a host file changed"
    assert hostile_batch["received"] == [], "something reached the host's loopback listener"
    assert row["expect"] == sorted(CASES[name][2]), "other fields must pass through untouched"


def test_batch_completed_and_nothing_survives(hostile_batch):
    assert set(hostile_batch["results"]) == set(CASES)
    assert hostile_batch["stats"]["helpers_replaced"] == 0
    # each helper is three processes (a waiting parent, the helper, its forker); no sample process may remain
    assert len(hostile_batch["leftover"]) == 6, "\n".join(hostile_batch["leftover"])
    assert hostile_batch["after_close"] == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["infinite_loop", "loop_swallows_timeout", "long_c_call", "ignores_sigterm_sigalrm"])
def test_wall_clock_bound_measured_on_the_host(name):
    """The batch above reads durations the helper reports; here the clock is the host's own, so a stalled
    helper or a sample that outlives its deadline cannot hide."""
    code, tests = TIMEOUT_CASES[name]
    with SandboxPool(workers=1) as pool:
        started = time.monotonic()
        result = pool.run(code, tests, Limits(timeout_s=1.0))
        elapsed = time.monotonic() - started
    assert result.verdict == "timeout", f"{name}: {result.verdict}: {result.reason}"
    assert elapsed <= 1.0 + 1.0, f"{name}: the host waited {elapsed:.2f} s for a 1 s timeout"


MEMFD_FLOOD = (
    "import os\nfds = []\nfor i in range(200):\n    fd = os.memfd_create('m')\n"
    "    os.posix_fallocate(fd, 0, 15 << 20)\n    fds.append(fd)"
)


@pytest.mark.timeout(120)
def test_a_memfd_flood_costs_the_sample_not_its_helper():
    """Memory no process maps (``memfd``s filled with ``fallocate``) counts towards nobody's size, so the kernel would
    kill the largest process of the full cgroup, the helper or its forker; the sample volunteers instead: ``memory``,
    and the same helper runs the next sample."""
    with SandboxPool(workers=1) as single:
        if not any("cgroup" in p for p in single.protections):
            pytest.skip("no memory cgroup can be made here")
        assert any("oom_score_adj 1000" in p for p in single.protections), single.protections
        helper = single.helpers.queue[0].proc.pid
        floods = [single.run(MEMFD_FLOOD, "assert True", Limits(timeout_s=10)) for _ in range(3)]
        after = single.run("x = 1", "assert x == 1", Limits())
        assert [flood.verdict for flood in floods] == ["memory"] * 3, floods
        assert after.verdict == "pass" and single.replaced == 0 and single.helpers.queue[0].proc.pid == helper
