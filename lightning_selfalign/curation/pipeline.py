"""The curation steps in order, as a library function: executed rows in, SFT rows out, every drop logged.

Order (cheap and row-local first, so the costly global steps see the fewest rows):

1. ``filter``: keep passing, untruncated, non-empty, complete responses (and, as chosen, those whose code answers
   the instruction as it was given: :mod:`.answers`);
2. ``select``: one response per instruction (``parent_id``; or up to ``per_instruction``), streamed, so memory
   holds that many rows per instruction;
3. ``sanitize``: the response (and instruction) transformations chosen in :class:`CurationConfig`;
4. ``decontaminate``: drop rows overlapping a benchmark item (HumanEval always);
5. ``exact_dedup`` then ``near_dedup``: per field, the first row in input order is kept.
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing
import random
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tqdm import tqdm

from lightning_selfalign.curation import sanitize
from lightning_selfalign.curation.answers import defines_named_function, uses_stated_values
from lightning_selfalign.decontamination import Decontaminator, parse_benchmark_file
from lightning_selfalign.dedup import MinHasher, exact_duplicate_of, near_duplicate_of
from lightning_selfalign.errors import UserError
from lightning_selfalign.presets import PRESETS, curation_preset
from lightning_selfalign.prompts.formats import starcoder2_sections
from lightning_selfalign.records import VERDICT_PASS

# Provenance copied from the executed row to the SFT row when present.
LINEAGE_FIELDS = (
    "fingerprint",
    "source",
    "category",
    "difficulty",
    "sample_index",
    "tests_run",
    "peer_tests",
    "peer_passes",
)
# What the steps after selection read; everything else is let go early to bound memory.
_WORKING_FIELDS = ("id", "parent_id", "round", "instruction", "response", "code", "tests", *LINEAGE_FIELDS)
SELECT_RULES = ("most_tests", "random", "peer_agreement")


@dataclass
class CurationConfig:
    """Every curation option (the ``selfalign curate`` flags of the same names). Options left None take the
    ``preset``'s value (:mod:`lightning_selfalign.presets`); :meth:`resolved` fills them in.

    Attributes:
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
        require_named_function: drop responses whose code does not define the function the instruction names
            (its first backticked ``name(``); beyond both references, off by default.
        require_stated_values: drop responses whose code lacks a number or quoted string the instruction's
            prose states (docstrings aside; for instructions that state the values to use, not worked
            examples); beyond both references, off by default.
        select: which passing response to keep per instruction: most_tests (most checks run, then
            shortest code, then id), random (seeded, order-independent) or peer_agreement (the code that passed
            the most sibling responses' tests, then seeded random; needs rows from selfalign peer-check).
        per_instruction: how many responses to keep per instruction, best first by --select (1 in both
            references); above 1, leave instruction out of --dedup_fields and function_name_dedup off, or dedup
            keeps one per instruction again.
        min_peer_passes: drop rows whose code passed fewer than this many sibling responses' test sets
            (peer_passes, written by selfalign peer-check and by self-align --peer_tests); 0 keeps all.
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

    preset: str = "starcoder2-instruct"
    normalize_fences: bool = True
    strip_chatter: bool = True
    drop_tests: bool | None = None
    keep_asked_tests: bool | None = None
    drop_reasoning: float | None = None
    drop_explanation: float | None = None
    assert_probability: float | None = None
    strip_comments: bool | None = None
    require_pass: bool = True
    drop_incomplete: bool = True
    drop_truncated: bool = True
    require_named_function: bool = False
    require_stated_values: bool = False
    select: str | None = None
    per_instruction: int = 1
    min_peer_passes: int = 0
    seed: int | None = None
    exact_dedup: bool = True
    function_name_dedup: bool | None = None
    near_dedup: bool | None = None
    dedup_fields: Sequence[str] = ("instruction", "response", "code")
    dedup_threshold: float = 0.7
    dedup_num_perm: int = 250
    dedup_ngram: int = 5
    benchmark_files: Sequence[str] = ()
    decontamination_fields: Sequence[str] = ("instruction", "response")
    decontamination_ngram: int = 5
    decontamination_threshold: float = 0.25
    workers: int = 2
    progress: bool = True

    def resolved(self) -> CurationConfig:
        """A copy with every option left None set to the preset's value."""
        published = asdict(curation_preset(self.preset))
        return replace(self, **{key: value for key, value in published.items() if getattr(self, key) is None})

    def problems(self) -> list[str]:
        """Every invalid setting, each naming its flag (empty when all are valid)."""
        if self.preset not in PRESETS:
            return [f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"]
        config = self.resolved()
        found = []
        if config.select not in SELECT_RULES:
            found.append(f"--select must be one of {', '.join(SELECT_RULES)}, got {config.select!r}")
        if self.min_peer_passes < 0:
            found.append(f"--min_peer_passes must be >= 0, got {self.min_peer_passes}")
        for flag, value in (
            ("--assert_probability", config.assert_probability),
            ("--drop_reasoning", config.drop_reasoning),
            ("--drop_explanation", config.drop_explanation),
        ):
            if not 0.0 <= value <= 1.0:
                found.append(f"{flag} must be in [0, 1], got {value}")
        if not 0.0 < self.dedup_threshold <= 1.0:
            found.append(f"--dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if not 0.0 < self.decontamination_threshold <= 1.0:
            found.append(f"--decontamination_threshold must be in (0, 1], got {self.decontamination_threshold}")
        for flag, value in (
            ("--dedup_ngram", self.dedup_ngram),
            ("--decontamination_ngram", self.decontamination_ngram),
            ("--dedup_num_perm", self.dedup_num_perm),
            ("--workers", self.workers),
            ("--per_instruction", self.per_instruction),
        ):
            if value < 1:
                found.append(f"{flag} must be at least 1, got {value}")
        if self.per_instruction > 1:
            deduped = "instruction" in self.dedup_fields and (self.exact_dedup or config.near_dedup)
            if deduped or config.function_name_dedup:
                found.append(
                    f"--per_instruction {self.per_instruction} keeps several responses to one instruction, which "
                    "dedup drops again: leave instruction out of --dedup_fields and set --function_name_dedup false"
                )
        missing = [spec for spec in self.benchmark_files if not parse_benchmark_file(spec)[1].is_file()]
        if missing:
            found.append(f"--benchmark_files: no such file(s): {', '.join(missing)}")
        return found


@dataclass
class CurationResult:
    """Kept SFT rows, one record per removed row (``id``, ``step``, ``reason`` and details), and counts."""

    rows: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    rows_in: int = 0
    dropped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    contamination: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    seconds: dict[str, float] = field(default_factory=dict)

    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, step: Callable, *args: Any) -> Any:
        """Run one step and record its wall time and CPU time (with its worker processes) under ``name``."""
        started, cpu = time.perf_counter(), _cpu_seconds()
        out = step(*args)
        self.seconds[name] = round(time.perf_counter() - started, 3)
        self.cpu_seconds[name] = round(_cpu_seconds() - cpu, 3)
        return out

    def drop(self, row: dict[str, Any], step: str, reason: str, **details: Any) -> None:
        self.dropped[step][reason] += 1
        self.removed.append(
            {"id": row.get("id"), "parent_id": row.get("parent_id"), "step": step, "reason": reason, **details}
        )

    def stats(self) -> dict[str, Any]:
        """Counts in, out and dropped per step and reason; rows_in == rows_out + dropped_total always."""
        dropped = {step: dict(sorted(reasons.items())) for step, reasons in self.dropped.items()}
        total = sum(sum(reasons.values()) for reasons in self.dropped.values())
        assert self.rows_in == len(self.rows) + total, "every input row must be kept or counted as dropped"
        contamination = {name: dict(sorted(items.items())) for name, items in self.contamination.items()}
        return {
            "step_seconds": dict(self.seconds),
            "step_cpu_seconds": dict(self.cpu_seconds),
            "rows_in": self.rows_in,
            "rows_out": len(self.rows),
            "dropped_total": total,
            "dropped": dropped,
            "contamination": contamination,
        }


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the worker pools)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stable_unit(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest(), "big")


def _rank(row: dict[str, Any], rule: str, seed: int) -> tuple:
    """Lower ranks win. most_tests: most checks run, then shortest solution, then id; random: seeded hash of id;
    peer_agreement: most sibling test sets passed, then seeded hash of id."""
    if rule == "random":
        return (_stable_unit(seed, row.get("id")),)
    if rule == "peer_agreement":
        return (-_peer_passes(row), _stable_unit(seed, row.get("id")))
    tests_run = row.get("tests_run")
    solution = row.get("code") or row.get("response") or ""
    return (-(tests_run if isinstance(tests_run, int) else 0), len(solution), str(row.get("id")))


def _peer_passes(row: dict[str, Any]) -> int:
    if "peer_passes" not in row:
        raise UserError(
            f"row {row.get('id')!r} has no peer_passes: --select peer_agreement and --min_peer_passes read rows "
            "written by selfalign peer-check (or self-align with --peer_tests true)"
        )
    return int(row["peer_passes"])


def _filter_reason(row: dict[str, Any], config: CurationConfig) -> str | None:
    if config.require_pass and row.get("verdict") != VERDICT_PASS:
        return f"verdict:{row.get('verdict')}"
    if config.min_peer_passes and _peer_passes(row) < config.min_peer_passes:
        return f"peer_passes<{config.min_peer_passes}"
    if config.drop_truncated and row.get("finish_reason") == "length":
        return "truncated"
    if not str(row.get("response", "")).strip():
        return "empty_response"
    if config.drop_incomplete and sanitize.is_incomplete(row["response"]):
        return "incomplete"
    if config.require_named_function and not defines_named_function(row["instruction"], row.get("code") or ""):
        return "named_function_missing"
    if config.require_stated_values and not uses_stated_values(row["instruction"], row.get("code") or ""):
        return "stated_value_missing"
    return None


def select_responses(rows: Iterable[dict[str, Any]], config: CurationConfig, result: CurationResult) -> list[dict]:
    """Filter, then keep the best ``per_instruction`` rows of each instruction group (in the input order of the
    kept rows)."""
    best: dict[str, list[tuple[tuple, int, dict]]] = {}
    losers: list[tuple[dict, str]] = []
    for position, row in enumerate(rows):
        result.rows_in += 1
        reason = _filter_reason(row, config)
        if reason is not None:
            result.drop(row, "filter", reason)
            continue
        row = {key: row[key] for key in _WORKING_FIELDS if key in row}
        parent = row.get("parent_id")
        group = str(parent) if parent is not None else "instruction:" + _instruction_key(row["instruction"])
        kept = best.setdefault(group, [])
        bisect.insort(kept, (_rank(row, config.select, config.seed), position, row), key=lambda entry: entry[:2])
        if len(kept) > config.per_instruction:
            losers.append((kept.pop()[2], group))
    for row, group in losers:
        result.drop(row, "select", "not_selected", selected=best[group][0][2].get("id"), rule=config.select)
    selected = [entry for entries in best.values() for entry in entries]
    return [row for _, _, row in sorted(selected, key=lambda entry: entry[1])]


def _instruction_key(text: str) -> str:
    """Group key for rows without a parent_id: the instruction with whitespace collapsed."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).hexdigest()


def sanitize_rows(rows: list[dict], config: CurationConfig, result: CurationResult) -> list[dict]:
    """Apply the chosen response/instruction transformations; a row left with no response is dropped.

    A response in StarCoder2-Instruct's four sections is rebuilt from them without the tags (the reference's
    SMART pass): tests and, by chance, reasoning and explanation left out as configured."""
    kept = []
    for row in rows:
        response = row["response"]
        if config.normalize_fences:
            response = sanitize.normalize_fences(response)
        if config.strip_chatter:
            response = sanitize.strip_chatter(response)
        asked = config.keep_asked_tests and "test" in row["instruction"].lower()
        keep_tests = not config.drop_tests or asked
        sections = starcoder2_sections(response)
        if sections is not None:
            rng = random.Random(_stable_unit(config.seed, row.get("id"), "sections"))
            keep_explanation = rng.random() >= config.drop_explanation
            keep_reasoning = rng.random() >= config.drop_reasoning
            response = sanitize.untagged_sections(sections, keep_reasoning, keep_explanation, keep_tests)
        elif not keep_tests:
            response = sanitize.drop_tests(response, row.get("tests") or "")
        if config.strip_comments:
            response = sanitize.strip_comments(response)
        if config.assert_probability > 0 and row.get("tests"):
            rng = random.Random(_stable_unit(config.seed, row.get("id"), "asserts"))
            row["instruction"] = sanitize.assert_augmented_instruction(
                row["instruction"], row["tests"], rng, config.assert_probability
            )
        if not response.strip():
            result.drop(row, "sanitize", "empty_after_sanitize")
            continue
        row["response"] = response
        kept.append(row)
    return kept


_WORKER_FUNCTION: Callable | None = None


def _apply_worker_function(chunk: list) -> list:
    assert _WORKER_FUNCTION is not None, "the pool must be forked after the function is set"
    return [_WORKER_FUNCTION(item) for item in chunk]


def parallel_map(function: Callable, items: Sequence, workers: int, chunk_size: int = 256) -> list:
    """``[function(x) for x in items]`` over ``workers`` forked processes (the function need not pickle)."""
    global _WORKER_FUNCTION
    if workers <= 1 or len(items) < 4 * chunk_size:
        return [function(item) for item in items]
    _WORKER_FUNCTION = function
    chunks = [list(items[start : start + chunk_size]) for start in range(0, len(items), chunk_size)]
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return [out for part in pool.imap(_apply_worker_function, chunks) for out in part]
    finally:
        _WORKER_FUNCTION = None


def _joined(row: dict, fields: Sequence[str]) -> str:
    return "\n".join(str(row.get(name) or "") for name in fields)


def decontaminate_rows(rows: list[dict], config: CurationConfig, result: CurationResult) -> list[dict]:
    """Drop rows whose text overlaps a benchmark item; each removal names the item and the overlap."""
    detector = Decontaminator(
        files=list(config.benchmark_files),
        ngram=config.decontamination_ngram,
        threshold=config.decontamination_threshold,
    )
    texts = [_joined(row, config.decontamination_fields) for row in rows]
    matches = parallel_map(detector.match, texts, config.workers)
    kept = []
    for row, match in zip(rows, matches):
        if match is None:
            kept.append(row)
            continue
        result.contamination[match.benchmark][match.item_id] += 1
        result.drop(row, "decontaminate", f"benchmark:{match.benchmark}", match=match.as_dict())
    return kept


def dedup_rows(rows: list[dict], config: CurationConfig, result: CurationResult) -> list[dict]:
    """Exact then near-duplicate removal on each of ``dedup_fields`` in turn (first occurrence kept)."""
    for name in config.dedup_fields:
        if config.exact_dedup:
            rows = _drop_exact(rows, name, result)
    if config.function_name_dedup:
        rows = _drop_same_function_names(rows, result)
    if not config.near_dedup:
        return rows
    hasher = MinHasher(num_perm=config.dedup_num_perm, ngram=config.dedup_ngram)
    fields = tqdm(config.dedup_fields, desc="curate: minhash", unit="field", leave=False, disable=not config.progress)
    signatures = {
        name: parallel_map(hasher.signature, [str(row.get(name) or "") for row in rows], config.workers)
        for name in fields
    }
    alive = list(range(len(rows)))
    for name in config.dedup_fields:
        texts = [str(rows[i].get(name) or "") for i in alive]
        duplicate_of = near_duplicate_of(
            texts,
            threshold=config.dedup_threshold,
            num_perm=config.dedup_num_perm,
            ngram=config.dedup_ngram,
            signatures=[signatures[name][i] for i in alive],
        )
        survivors = []
        for i, other in zip(alive, duplicate_of):
            if other is None:
                survivors.append(i)
            else:
                result.drop(rows[i], "near_dedup", f"near_duplicate:{name}", duplicate_of=rows[alive[other]].get("id"))
        alive = survivors
    return [rows[i] for i in alive]


def _drop_exact(rows: list[dict], name: str, result: CurationResult) -> list[dict]:
    """Rows whose ``name`` field is not a (normalised) repeat of an earlier row's; non-empty fields only."""
    texts = [str(row.get(name) or "") for row in rows]
    kept = []
    for row, text, first in zip(rows, texts, exact_duplicate_of(texts)):
        if first is None or not text.strip():
            kept.append(row)
        else:
            result.drop(row, "exact_dedup", f"exact_duplicate:{name}", duplicate_of=rows[first].get("id"))
    return kept


def _drop_same_function_names(rows: list[dict], result: CurationResult) -> list[dict]:
    """One row per set of function and class names its code defines (the references' name dedup: the same names
    twice are most often the same task twice); code defining none is kept."""
    seen: dict[frozenset, Any] = {}
    kept = []
    for row in rows:
        names = sanitize.defined_names(str(row.get("code") or ""))
        if names and names in seen:
            result.drop(row, "exact_dedup", "same_function_names", duplicate_of=seen[names])
            continue
        if names:
            seen[names] = row.get("id")
        kept.append(row)
    return kept


def sft_row(row: dict[str, Any]) -> dict[str, Any]:
    """The training row: instruction, response, round and lineage."""
    out = {
        "id": row.get("id"),
        "parent_id": row.get("parent_id"),
        "instruction": row["instruction"],
        "response": row["response"],
        "round": row.get("round", 0),
    }
    out.update({key: row[key] for key in LINEAGE_FIELDS if key in row})
    return out


def curate(rows: Iterable[dict[str, Any]], config: CurationConfig | None = None) -> CurationResult:
    """Curate executed rows into SFT rows; see the module docstring for the steps."""
    config = config or CurationConfig()
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    config = config.resolved()
    result = CurationResult(rows=[], removed=[])
    rows = result.timed("read_filter_select", select_responses, rows, config, result)
    for step in (sanitize_rows, decontaminate_rows, dedup_rows):
        rows = result.timed(step.__name__, step, rows, config, result)
    result.rows = [sft_row(row) for row in rows]
    return result


def config_dict(config: CurationConfig) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}
