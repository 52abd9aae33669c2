"""``selfalign curate``: read executed rows, curate, write SFT rows, removed rows and stats."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lightning_selfalign.curation.pipeline import CurationConfig, config_dict, curate
from lightning_selfalign.decontamination import parse_benchmark_file
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import (
    expand_paths,
    read_jsonl,
    refuse_output_among_inputs,
    stats_path,
    write_jsonl,
    write_stats,
)
from lightning_selfalign.records import REQUIRED_CURATE

_STRING_FIELDS = ("instruction", "response", "verdict")
_OPTIONAL_STRING_FIELDS = ("code", "tests")


def removed_path(output: str | Path) -> Path:
    """Where the removed rows go: ``out.jsonl`` -> ``out.removed.jsonl``."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".removed.jsonl")


def _line_of(path: Path, row_number: int) -> int:
    """File line of the ``row_number``-th (1-based) JSON row: read_jsonl skips blank lines."""
    seen = 0
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if raw.strip():
                seen += 1
                if seen == row_number:
                    return lineno
    return row_number


def _type_problem(row: dict[str, Any]) -> str | None:
    for name in _STRING_FIELDS:
        if not isinstance(row[name], str):
            return f"field {name!r} must be a string, got {type(row[name]).__name__}"
    for name in _OPTIONAL_STRING_FIELDS:
        if row.get(name) is not None and not isinstance(row[name], str):
            return f"field {name!r} must be a string, got {type(row[name]).__name__}"
    tests_run = row.get("tests_run")
    if tests_run is not None and (not isinstance(tests_run, int) or isinstance(tests_run, bool)):
        return f"field 'tests_run' must be an integer, got {type(tests_run).__name__}"
    return None


def read_executed_rows(input: str | list[str], progress: bool = True) -> Iterator[dict[str, Any]]:
    """Stream executed rows from every file matched by ``input``; a malformed row names its file and line."""
    for path in expand_paths(input):
        for number, row in enumerate(
            tqdm(
                read_jsonl(path, required=REQUIRED_CURATE),
                desc=f"curate: {path.name}",
                unit="row",
                disable=not progress,
                file=sys.stderr,
            ),
            start=1,
        ):
            problem = _type_problem(row)
            if problem:
                raise UserError(f"{path}:{_line_of(path, number)}: {problem}")
            yield row


def curate_command(
    input: str | list[str],
    output: str,
    *,
    preset: Literal["starcoder2-instruct", "selfcodealign"] = "starcoder2-instruct",
    normalize_fences: bool = True,
    strip_chatter: bool = True,
    drop_tests: bool | None = None,
    keep_asked_tests: bool | None = None,
    drop_reasoning: float | None = None,
    drop_explanation: float | None = None,
    assert_probability: float | None = None,
    strip_comments: bool | None = None,
    require_pass: bool = True,
    drop_incomplete: bool = True,
    drop_truncated: bool = True,
    select: Literal["most_tests", "random"] | None = None,
    seed: int | None = None,
    exact_dedup: bool = True,
    function_name_dedup: bool | None = None,
    near_dedup: bool | None = None,
    dedup_fields: list[str] | None = None,
    dedup_threshold: float = 0.7,
    dedup_num_perm: int = 250,
    dedup_ngram: int = 5,
    benchmark_files: list[str] | None = None,
    decontamination_fields: list[str] | None = None,
    decontamination_ngram: int = 5,
    decontamination_threshold: float = 0.25,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Turn executed rows into SFT rows: filter, select, sanitize, decontaminate, dedup.

    Writes OUTPUT (SFT rows: instruction, response, round, id, parent_id and lineage), OUTPUT's
    ``.removed.jsonl`` (one line per dropped row: step, reason, matched benchmark item or duplicate id)
    and ``.stats.json`` (rows in, rows out, dropped per step and reason). The output is rewritten whole
    (curation compares rows with each other, so there is nothing to resume).

    Args:
        input: executed JSONL file(s) or glob(s); rows need id, instruction, response, verdict.
        output: SFT JSONL file to write.
        preset: the published curation whose values fill every option left unset: starcoder2-instruct (random
            pick, seed 0, exact and function-name dedup, its SMART sanitizing, no MinHash) or selfcodealign
            (random pick, seed 6666, tests split off, MinHash at 0.7). See docs/fidelity.md.
        normalize_fences: rewrite code fences as ```python / ```, close an unclosed last block.
        strip_chatter: cut a run-on into the next prompt example and closing pleasantries.
        drop_tests: remove the tests from the response (the [Tests] section, what follows </response>, or the
            tests block and its "Tests:" heading).
        keep_asked_tests: keep the tests where the instruction mentions tests (StarCoder2-Instruct's rule).
        drop_reasoning: chance of leaving a StarCoder2-Instruct response's [Reasoning] out (0.5 in its SMART pass).
        drop_explanation: chance of leaving its [Explanation] out (0.5 in its SMART pass).
        assert_probability: chance of appending 1-5 of the row's asserts to the instruction.
        strip_comments: remove # comments inside the response's Python blocks.
        require_pass: keep only rows whose verdict is pass; false keeps every parsed response whatever its verdict
            (the execution-filter ablation of SelfCodeAlign).
        drop_incomplete: drop responses with TODO / FIXME / "your code here".
        drop_truncated: drop responses cut by the length limit (finish_reason "length").
        select: which passing response to keep per instruction: most_tests (most checks run, then
            shortest code, then id) or random (seeded, order-independent).
        seed: seed for --select random and --assert_probability.
        exact_dedup: drop rows whose dedup field repeats an earlier row's after normalisation.
        function_name_dedup: drop rows whose code defines the same set of function and class names as an
            earlier row's.
        near_dedup: drop near duplicates with MinHash LSH (datasketch).
        dedup_fields: fields deduplicated in turn (default: instruction, response, code).
        dedup_threshold: Jaccard similarity at which two texts are near duplicates.
        dedup_num_perm: MinHash permutations.
        dedup_ngram: word n-gram length of the MinHash shingles.
        benchmark_files: JSONL benchmark files (NAME=PATH or PATH) checked besides HumanEval, which
            is always checked (MBPP, DS-1000, LiveCodeBench, ...).
        decontamination_fields: row fields scanned for benchmark overlap (default: instruction, response).
        decontamination_ngram: n-gram length of the overlap test, in normalised word tokens.
        decontamination_threshold: share of a benchmark item's n-grams that marks a row contaminated.
        workers: processes for MinHash and decontamination.
        progress: show progress bars on stderr.
    """
    config = CurationConfig(
        preset=preset,
        normalize_fences=normalize_fences,
        strip_chatter=strip_chatter,
        drop_tests=drop_tests,
        keep_asked_tests=keep_asked_tests,
        drop_reasoning=drop_reasoning,
        drop_explanation=drop_explanation,
        function_name_dedup=function_name_dedup,
        assert_probability=assert_probability,
        strip_comments=strip_comments,
        require_pass=require_pass,
        drop_incomplete=drop_incomplete,
        drop_truncated=drop_truncated,
        select=select,
        seed=seed,
        exact_dedup=exact_dedup,
        near_dedup=near_dedup,
        dedup_fields=tuple(dedup_fields or ("instruction", "response", "code")),
        dedup_threshold=dedup_threshold,
        dedup_num_perm=dedup_num_perm,
        dedup_ngram=dedup_ngram,
        benchmark_files=tuple(benchmark_files or ()),
        decontamination_fields=tuple(decontamination_fields or ("instruction", "response")),
        decontamination_ngram=decontamination_ngram,
        decontamination_threshold=decontamination_threshold,
        workers=workers,
        progress=progress,
    )
    problems = config.problems()
    if problems:
        raise UserError("; ".join(problems))
    missing = [spec for spec in benchmark_files or () if not parse_benchmark_file(spec)[1].is_file()]
    if missing:
        raise UserError(f"--benchmark_files: no such file(s): {', '.join(missing)}")
    refuse_output_among_inputs(input, output)
    started = time.perf_counter()
    result = curate(read_executed_rows(input, progress=progress), config)
    write_jsonl(output, result.rows)
    write_jsonl(removed_path(output), result.removed)
    stats = result.stats()
    stats.update(
        stage="curate",
        input=input,
        output=str(output),
        removed=str(removed_path(output)),
        seconds=round(time.perf_counter() - started, 3),
        settings=config_dict(config.resolved()),
    )
    write_stats(output, stats)
    print(_summary(stats), file=sys.stderr)
    return stats


def _summary(stats: dict[str, Any]) -> str:
    lines = [f"curate: {stats['rows_in']} rows in, {stats['rows_out']} out, {stats['dropped_total']} dropped"]
    for step, reasons in stats["dropped"].items():
        lines.append(f"  {step}: " + ", ".join(f"{reason} {count}" for reason, count in reasons.items()))
    lines.append(f"  stats: {stats_path(stats['output'])}  removed rows: {stats['removed']}")
    return "\n".join(lines)
