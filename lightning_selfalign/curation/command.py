"""``selfalign curate``: :func:`curate_file` reads executed rows, curates them and writes SFT rows, removed rows and
stats (the rounds call it too); :func:`curate_command` parses the flags and prints the summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lightning_selfalign.curation.pipeline import CurationConfig, config_dict, curate
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import (
    expand_paths,
    read_jsonl,
    refuse_output_among_inputs,
    stats_path,
    write_jsonl,
    write_stats,
)
from lightning_selfalign.options import document_flags, from_flags
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


def read_executed_rows(
    input: str | list[str], progress: bool = True, allow_empty: bool = False
) -> Iterator[dict[str, Any]]:
    """Stream executed rows from every file matched by ``input``; a malformed row names its file and line."""
    for path in expand_paths(input):
        for number, row in enumerate(
            tqdm(
                read_jsonl(path, required=REQUIRED_CURATE, allow_empty=allow_empty),
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


@document_flags(CurationConfig)
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
    require_named_function: bool = False,
    require_stated_values: bool = False,
    select: Literal["most_tests", "random", "peer_agreement"] | None = None,
    per_instruction: int = 1,
    min_peer_passes: int = 0,
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
    (curation compares rows with each other, so there is nothing to resume). Every other flag is a field of
    CurationConfig, which selfalign self-align takes as --curation.X.

    Args:
        input: executed JSONL file(s) or glob(s); rows need id, instruction, response, verdict.
        output: SFT JSONL file to write.
    """
    config = from_flags(CurationConfig, locals())
    stats = curate_file(input, output, config)
    print(_summary(stats), file=sys.stderr)
    return stats


def curate_file(
    input: str | list[str], output: str | Path, config: CurationConfig, allow_empty: bool = False
) -> dict[str, Any]:
    """Curate the executed rows of ``input`` (files or globs) into ``output``, writing the removed rows and the stats
    beside it; an empty input is an error unless ``allow_empty``. Returns the stats."""
    problems = config.problems()
    if problems:
        raise UserError("; ".join(problems))
    refuse_output_among_inputs(input, output)
    started = time.perf_counter()
    result = curate(read_executed_rows(input, config.progress, allow_empty), config)
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
    return stats


def _summary(stats: dict[str, Any]) -> str:
    lines = [f"curate: {stats['rows_in']} rows in, {stats['rows_out']} out, {stats['dropped_total']} dropped"]
    for step, reasons in stats["dropped"].items():
        lines.append(f"  {step}: " + ", ".join(f"{reason} {count}" for reason, count in reasons.items()))
    lines.append(f"  stats: {stats_path(stats['output'])}  removed rows: {stats['removed']}")
    return "\n".join(lines)
