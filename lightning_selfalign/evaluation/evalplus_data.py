"""HumanEval+ and MBPP+ through the evalplus package (the ``evalplus`` extra): the one module that imports it.

EvalPlus's loaders read its data from the file an override variable names, else from its cache, and download it when
it is absent. :func:`load_evalplus_tasks` makes sure the file is there before it calls them, so nothing is ever
downloaded. Expected outputs come from running each task's canonical solution (``evalplus.evaluate.get_groundtruth``,
cached by evalplus), with the time each input took. Each task becomes a :class:`.Task` whose ``test`` and
``plus_test`` run the base and the extra inputs through EvalPlus's own comparison (:mod:`.evalplus_oracle`) in our
sandbox, so a sample's two verdicts are the ones EvalPlus's evaluator gives it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib
import importlib.util
import os
import pickle
import sys
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.evaluation.evalplus_oracle import is_floats
from lightning_selfalign.evaluation.tasks import Task

INSTALL = "pip install 'lightning-selfalign[evalplus]'"


@dataclass(frozen=True)
class EvalPlusData:
    """Where evalplus (0.3.1) keeps one benchmark, and the loader that reads it."""

    dataset: str  # evalplus's name, also the module evalplus.data.<dataset>
    release: str
    version: str
    override: str  # the variable naming another data file (evalplus reads it when imported)
    loader: str

    @property
    def url(self) -> str:
        releases = f"https://github.com/evalplus/{self.release.lower()}_release/releases/download"
        return f"{releases}/{self.version}/{self.release}.jsonl.gz"


DATASETS = {
    "humaneval+": EvalPlusData(
        "humaneval", "HumanEvalPlus", "v0.1.10", "HUMANEVAL_OVERRIDE_PATH", "get_human_eval_plus"
    ),
    "mbpp+": EvalPlusData("mbpp", "MbppPlus", "v0.2.0", "MBPP_OVERRIDE_PATH", "get_mbpp_plus"),
}


def data_path(benchmark: str) -> Path:
    """The file evalplus's loader reads for ``benchmark``: the one its override variable names, else its cache file.
    evalplus's own answer when it is installed; without it (for the error message), evalplus 0.3.1's."""
    spec = DATASETS[benchmark]
    if importlib.util.find_spec("evalplus") is None:
        return default_data_path(spec)
    data = _import_evalplus(benchmark, f"evalplus.data.{spec.dataset}")
    metadata = _import_evalplus(benchmark, "evalplus.data.utils").get_dataset_metadata
    version = getattr(data, f"{spec.dataset.upper()}_PLUS_VERSION")
    # The loader reads the override variable's value from when evalplus was first imported: ask the module.
    return Path(getattr(data, spec.override) or metadata(spec.release, version, False, False)[1])


def default_data_path(spec: EvalPlusData) -> Path:
    """Where evalplus 0.3.1 looks: ``$OVERRIDE``, else ``appdirs.user_cache_dir("evalplus")/RELEASE-VERSION.jsonl``."""
    override = os.environ.get(spec.override)
    if override:
        return Path(override)
    if sys.platform == "darwin":
        cache = Path.home() / "Library" / "Caches"
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "evalplus" / f"{spec.release}-{spec.version}.jsonl"


def load_evalplus_tasks(benchmark: str) -> list[Task]:
    """HumanEval+ or MBPP+ as tasks with base and plus test suites, through evalplus's loader once its data file is
    known to be there; a one-line error naming what is missing (the package, the file) otherwise."""
    spec, path = DATASETS[benchmark], data_path(benchmark)
    missing = []
    if importlib.util.find_spec("evalplus") is None:
        missing.append(f"needs the evalplus package ({INSTALL})")
    if not path.is_file():  # the loader would download it
        missing.append(_missing_data(spec, path))
    if missing:
        raise UserError(f"--benchmark {benchmark}: " + "; and ".join(missing) +
                        "; or pass the benchmark as --benchmark_file FILE.jsonl in HumanEval's format")  # fmt: skip
    data = _import_evalplus(benchmark, f"evalplus.data.{spec.dataset}")
    config = _import_evalplus(benchmark, "evalplus.config")
    oracles = _import_evalplus(benchmark, "evalplus.eval._special_oracle")
    get_groundtruth = _import_evalplus(benchmark, "evalplus.evaluate").get_groundtruth
    with contextlib.redirect_stdout(sys.stderr):  # evalplus prints its progress
        problems = getattr(data, spec.loader)()
        digest = getattr(data, f"{spec.loader}_hash")()
        not_none = list(oracles.MBPP_OUTPUT_NOT_NONE_TASKS) if spec.dataset == "mbpp" else []
        expected = get_groundtruth(problems, digest, not_none)
    limits = config.DEFAULT_MIN_TIME_LIMIT, config.DEFAULT_GT_TIME_LIMIT_FACTOR
    return [evalplus_task(problem, expected[task_id], spec.dataset, *limits) for task_id, problem in problems.items()]


def _import_evalplus(benchmark: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"--benchmark {benchmark}: the evalplus package does not import ({exc}); {INSTALL}") from None


def _missing_data(spec: EvalPlusData, path: Path) -> str:
    return (
        f"EvalPlus's data is not at {path}, and this tool never downloads: where there is internet, gunzip "
        f"{spec.url} (or run `python -c 'import evalplus.data as d; d.{spec.loader}()'`, which writes "
        f"~/.cache/evalplus/{spec.release}-{spec.version}.jsonl) and copy it to that path, or set {spec.override}=FILE"
    )


def evalplus_task(
    problem: dict[str, Any],
    groundtruth: dict[str, list],
    dataset: str,
    min_time_limit: float = 1.0,
    time_limit_factor: float = 4.0,
) -> Task:
    """One EvalPlus problem (``task_id``, ``prompt``, ``entry_point``, ``atol``, ``base_input``, ``plus_input``) and
    its ground truth (``base``/``plus`` outputs, ``base_time``/``plus_time`` seconds) as a :class:`.Task`. Each input
    may take ``max(min_time_limit, time_limit_factor * its time)``, as in EvalPlus's ``untrusted_check``."""

    def suite(part: str) -> str:
        limits = [max(min_time_limit, time_limit_factor * seconds) for seconds in groundtruth[f"{part}_time"]]
        return suite_test(dataset, problem["entry_point"], problem["atol"], problem[f"{part}_input"],
                          groundtruth[part], limits)  # fmt: skip

    return Task(problem["task_id"], problem["prompt"], problem["entry_point"], suite("base"), suite("plus"))


def suite_test(dataset: str, entry_point: str, atol: float, inputs: list, expected: list, time_limits: list) -> str:
    """A ``check(candidate)`` that runs EvalPlus's comparison on these inputs. Inputs and outputs travel pickled
    (their types exactly: tuples, sets, complex numbers, NaN), compressed, as one string literal."""
    assert len(inputs) == len(expected) == len(time_limits), "one expected output and one time limit per input"
    data = pickle.dumps((inputs, expected, time_limits), protocol=4)
    payload = base64.b64encode(zlib.compress(data, 9)).decode("ascii")
    needs_numpy = atol != 0 or any(is_floats(output) for output in expected)
    call = f"run_suite(candidate, {dataset!r}, {entry_point!r}, {atol!r}, {needs_numpy}, {payload!r})"
    return f"def check(candidate):\n{textwrap.indent(_oracle_source(), '    ')}\n    {call}\n"


@functools.cache
def _oracle_source() -> str:
    return Path(__file__).with_name("evalplus_oracle.py").read_text(encoding="utf-8")
