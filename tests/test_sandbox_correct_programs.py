"""Correct programs must pass: each case is a real pattern of generated code that the sandbox once rejected.

All cases run as one batch through :func:`execute_rows` on a shared pool (2 helpers), as in
``test_sandbox_hostile.py``; each parametrised test checks one case's verdict and its number of checks.
"""

from __future__ import annotations

import json
import os

import pytest

from lightning_selfalign.sandbox import Limits, SandboxPool
from lightning_selfalign.sandbox.batch import execute_rows

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="needs Linux")

UNITTEST_PASSING = (
    "import unittest\n\ndef add(a, b):\n    return a + b\n\n"
    "class TestAdd(unittest.TestCase):\n    def test_small(self):\n        self.assertEqual(add(1, 2), 3)\n\n"
    "    def test_zero(self):\n        self.assertEqual(add(0, 0), 0)\n"
)
SPAWN_POOL = (
    "import multiprocessing as mp\n\ndef square(x):\n    return x * x\n\n"
    "def squares(xs):\n    with mp.get_context('spawn').Pool(2) as pool:\n        return pool.map(square, xs)\n"
)

# name: (code, tests, verdict, checks counted)
CASES: dict[str, tuple[str, str, str, int]] = {
    # named in the issue
    "main_block_sys_exit_main": (
        "import sys\n\ndef main():\n    print('done')\n    return 0\n\n"
        "if __name__ == '__main__':\n    sys.exit(main())",
        "assert main() == 0",
        "pass",
        1,
    ),
    "main_block_reads_input": (
        "def main():\n    print('hello', input())\n\nif __name__ == '__main__':\n    main()",
        "assert callable(main)",
        "pass",
        1,
    ),
    "spawn_pool": (SPAWN_POOL, "assert squares([1, 2, 3]) == [1, 4, 9]", "pass", 1),
    "subprocess_sys_executable": (
        "import subprocess, sys\n\ndef run(code):\n"
        "    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout",
        "assert run('print(6 * 7)') == '42\\n'",
        "pass",
        1,
    ),
    "inspect_getsource": (
        "import inspect\n\ndef double(x):\n    return 2 * x\n",
        "assert inspect.getsource(double) == 'def double(x):\\n    return 2 * x\\n'",
        "pass",
        1,
    ),
    "os_setsid": (
        "import os\n\ndef detach():\n    return os.setsid()",
        "detach()\nassert os.getsid(0) == os.getpid()",
        "pass",
        1,
    ),
    "unittest_main_exit_false": (UNITTEST_PASSING, "unittest.main(exit=False)", "pass", 2),
    "unittest_main": (UNITTEST_PASSING, "unittest.main()", "pass", 2),
    "stdin_gives_eof": (
        "import sys\n\ndef read_all():\n    return sys.stdin.read()",
        "assert read_all() == ''",
        "pass",
        1,
    ),
    # more of the same kinds
    "spawn_process": (
        "import multiprocessing as mp\n\ndef work(q):\n    q.put(sum(range(10)))\n\n"
        "def run():\n    ctx = mp.get_context('spawn')\n    q = ctx.Queue()\n"
        "    p = ctx.Process(target=work, args=(q,))\n"
        "    p.start()\n    value = q.get(timeout=20)\n    p.join()\n    return value, p.exitcode\n",
        "assert run() == (45, 0)",
        "pass",
        1,
    ),
    "spawn_process_pool_executor": (
        "import multiprocessing as mp\nfrom concurrent.futures import ProcessPoolExecutor\n\ndef cube(x):\n"
        "    return x ** 3\n\ndef cubes(xs):\n"
        "    with ProcessPoolExecutor(2, mp_context=mp.get_context('spawn')) as ex:\n"
        "        return list(ex.map(cube, xs))",
        "assert cubes([2, 3]) == [8, 27]",
        "pass",
        1,
    ),
    "inspect_getsource_of_a_class": (
        "import inspect\n\nclass Point:\n    x = 1\n",
        "assert inspect.getsource(Point).startswith('class Point:')",
        "pass",
        1,
    ),
    "traceback_shows_the_source_line": (
        "import traceback\n\ndef fail():\n    raise ValueError('no')\n",
        "try:\n    fail()\nexcept ValueError:\n    text = traceback.format_exc()\n"
        "assert \"raise ValueError('no')\" in text",
        "pass",
        1,
    ),
    "reads_its_own_file": (
        "import os\n\nHERE = os.path.dirname(os.path.abspath(__file__))\n",
        "assert open(__file__).read().startswith('import os') and os.path.isdir(HERE)",
        "pass",
        1,
    ),
    "not_a_session_leader": ("import os", "assert os.getsid(0) != os.getpid()", "pass", 1),
    "os_setpgrp": (
        "import os\n\ndef own_group():\n    os.setpgrp()\n    return os.getpgrp()",
        "assert own_group() == os.getpid()",
        "pass",
        1,
    ),
    "unittest_under_main_guard": (
        UNITTEST_PASSING + "\nif __name__ == '__main__':\n    unittest.main()\n",
        "assert add(2, 2) == 4",
        "pass",
        3,
    ),
    "unittest_only_under_main_guard": (
        UNITTEST_PASSING + "\nif __name__ == '__main__':\n    unittest.main()\n",
        "",
        "pass",
        2,
    ),
    "unittest_in_the_tests": (
        "def add(a, b):\n    return a + b",
        "import unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
        "\n    def test_add_negative(self):\n        self.assertEqual(add(-2, -3), -5)\n\nunittest.main(exit=False)",
        "pass",
        2,
    ),
    "unittest_subtests": (
        "import unittest\n\ndef is_even(n):\n    return n % 2 == 0\n",
        "class T(unittest.TestCase):\n    def test_evens(self):\n        for n in (0, 2, 4):\n"
        "            with self.subTest(n=n):\n                self.assertTrue(is_even(n))\n\nunittest.main(exit=False)",
        "pass",
        1,
    ),
    "unittest_with_asserts_too": (UNITTEST_PASSING, "unittest.main(exit=False)\nassert add(1, 1) == 2", "pass", 3),
    # correct verdicts for wrong programs in the same shapes
    "unittest_failure_fails": (
        UNITTEST_PASSING.replace("return a + b", "return a - b"),
        "unittest.main(exit=False)",
        "fail",
        1,  # test_zero passes: 0 - 0 == 0
    ),
    "unittest_main_failure_fails": (
        UNITTEST_PASSING.replace("return a + b", "return a * b"),
        "unittest.main()",
        "fail",
        1,
    ),
    "unittest_error_is_an_error": (
        "import unittest\n\ndef f():\n    return {}['k']\n",
        "class T(unittest.TestCase):\n    def test_f(self):\n        self.assertEqual(f(), 1)\n\n"
        "unittest.main(exit=False)",
        "error",
        0,
    ),
    "unittest_subtest_failure_fails": (
        "import unittest\n\ndef is_even(n):\n    return n % 2 == 1\n",
        "class T(unittest.TestCase):\n    def test_evens(self):\n        for n in (0, 2):\n"
        "            with self.subTest(n=n):\n                self.assertTrue(is_even(n))\n\nunittest.main(exit=False)",
        "fail",
        0,
    ),
    "unittest_main_in_the_code_cannot_end_the_tests": (
        UNITTEST_PASSING + "unittest.main()\n",
        "assert add(1, 1) == 3",
        "error",
        0,
    ),
    "unittest_passing_in_the_code_does_not_count": (
        UNITTEST_PASSING + "unittest.main(exit=False)\n",
        "x = add(1, 1)",
        "no_tests",
        0,
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rows = [{"id": name, "code": code, "tests": tests} for name, (code, tests, _, _) in CASES.items()]
    output = tmp_path_factory.mktemp("correct") / "out.jsonl"
    with SandboxPool(workers=2) as pool:
        execute_rows(rows, output, Limits(timeout_s=30), pool=pool, retry_timeouts=False, progress=False)
    return {row["id"]: row for row in map(json.loads, output.read_text().splitlines())}


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_program(results, name):
    row = results[name]
    _, _, verdict, checks = CASES[name]
    assert (row["verdict"], row["tests_run"]) == (verdict, checks), f"{name}: {row['verdict']}: {row['reason']}"
