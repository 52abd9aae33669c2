"""The three generation stages: concepts from seeds, instructions from concepts, responses with tests from
instructions. Each is a function you can call alone (:func:`write_concepts`, :func:`write_instructions`,
:func:`write_responses`); ``selfalign generate`` is :func:`generate_command`.

How a stage stays reproducible and resumable:

- every output row's ``id`` is ``stable_id(parent id, stage, sample index)``, and its sampling seed (and its
  few-shot pick) derive from that id and ``--seed``, so a sample does not depend on batching, sharding,
  the engine's scheduling or on being resumed;
- rows are appended and flushed one by one; samples that were dropped (cut off by the length limit, or
  not parseable) are appended to ``OUT.dropped.jsonl`` with the reason, so a rerun knows them too and
  skips every sample already decided;
- ``fingerprint`` (prompt template + few-shot pool + sampling settings + model) is stored in every row, and
  a rerun into a file written with other settings stops instead of mixing the two.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lightning_selfalign.engines import Completion, Engine, LazyEngine, Request, Sampling
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import (
    JsonlAppender,
    fingerprint,
    finished_ids,
    read_jsonl_files,
    refuse_output_among_inputs,
    stable_id,
    write_stats,
)
from lightning_selfalign.options import EngineChoice, SamplingOptions, document_flags, from_flags
from lightning_selfalign.presets import DEFAULT_PRESET, generation_preset
from lightning_selfalign.prompts import (
    CATEGORIES,
    DIFFICULTIES,
    FORMATS,
    build_prompt,
    num_fewshot_for,
    parse_output,
    prompt_fingerprint,
)
from lightning_selfalign.records import REQUIRED_CONCEPT, REQUIRED_INSTRUCTION, REQUIRED_SEED

Stage = Literal["concepts", "instructions", "responses"]
REQUIRED_INPUT = {"concepts": REQUIRED_SEED, "instructions": REQUIRED_CONCEPT, "responses": REQUIRED_INSTRUCTION}
SEED_RANGE = 2**31  # servers and vLLM take 32-bit seeds


@dataclass(frozen=True)
class StageSettings:
    """What one stage run samples and how; ``for_stage`` fills the preset's per-stage defaults."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1536
    chat: bool = False
    prompt_format: str = "starcoder2-instruct"
    num_fewshot: int | None = None  # None: the stage's published count (8 / 8 / 1)
    categories: tuple[str, ...] = ("function",)
    difficulties: tuple[str, ...] = DIFFICULTIES
    round: int = 0
    seed: int = 0
    batch_size: int | None = None
    keep_dropped: bool = False
    progress: bool = True

    @classmethod
    def for_stage(cls, stage: str, preset: str = DEFAULT_PRESET, **overrides: Any) -> StageSettings:
        """The preset's settings for ``stage`` (responses: n = 10), with each override that is not None."""
        published = generation_preset(preset)
        defaults = {
            "n": published.n_responses if stage == "responses" else 1,
            "temperature": published.temperature,
            "top_p": published.top_p,
            "max_new_tokens": published.max_new_tokens,
            "prompt_format": published.prompt_format,
            "categories": published.categories,
        }
        return cls(**{**defaults, **{key: value for key, value in overrides.items() if value is not None}})

    def problems(self) -> list[str]:
        """Every invalid setting, named by its flag."""
        checks = [
            (self.n >= 1, f"--n must be at least 1, got {self.n}"),
            (self.temperature >= 0, f"--temperature must be >= 0 (0 = greedy), got {self.temperature}"),
            (0 < self.top_p <= 1, f"--top_p must be in (0, 1], got {self.top_p}"),
            (self.max_new_tokens >= 1, f"--max_new_tokens must be at least 1, got {self.max_new_tokens}"),
            (self.num_fewshot is None or self.num_fewshot >= 0,
             f"--num_fewshot must be >= 0, got {self.num_fewshot}"),
            (self.prompt_format in FORMATS,
             f"--prompt_format must be one of {list(FORMATS)}, got {self.prompt_format!r}"),
            (self.batch_size is None or self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (bool(self.categories) and set(self.categories) <= set(CATEGORIES),
             f"--categories must be a non-empty subset of {list(CATEGORIES)}, got {list(self.categories)}"),
            (bool(self.difficulties) and set(self.difficulties) <= set(DIFFICULTIES),
             f"--difficulties must be a non-empty subset of {list(DIFFICULTIES)}, got {list(self.difficulties)}"),
        ]  # fmt: skip
        return [message for ok, message in checks if not ok]


@dataclass(frozen=True)
class Sample:
    """One request to make: the input row, the sample's index and id, and the fields its prompt was built from."""

    row: dict
    index: int
    id: str
    sampled: dict  # fields the stage itself chose for this sample (category, difficulty)
    request: Request


def dropped_path(output: str | Path) -> Path:
    """Where dropped samples are recorded: ``out.jsonl`` -> ``out.dropped.jsonl``."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".dropped.jsonl")


def run_fingerprint(stage: str, settings: StageSettings, model: str, prompt_fingerprint: str) -> str:
    """Digest of everything that decides a row's content (not n, batch size or shard: they change none)."""
    sampling = {key: getattr(settings, key) for key in ("temperature", "top_p", "max_new_tokens", "seed")}
    if stage == "instructions":  # only a choice off the defaults enters, so rows made before it stay valid
        if tuple(settings.categories) != CATEGORIES:  # the original default, all three kinds
            sampling["categories"] = list(settings.categories)
        if tuple(settings.difficulties) != DIFFICULTIES:
            sampling["difficulties"] = list(settings.difficulties)
    return fingerprint({"stage": stage, "prompt": prompt_fingerprint, "sampling": sampling, "model": model})


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"``, or the launcher's rank and world size (torchrun, SLURM), else ``(0, 1)``."""
    if shard is None:
        for rank, world in (
            ("RANK", "WORLD_SIZE"),
            ("SLURM_PROCID", "SLURM_NTASKS"),
            ("LOCAL_RANK", "LOCAL_WORLD_SIZE"),
        ):
            if os.environ.get(rank) and os.environ.get(world):
                shard = f"{os.environ[rank]}/{os.environ[world]}"
                break
        else:
            return 0, 1
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise UserError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {shard!r}")
    return int(index), int(count)


def in_shard(row_id: str, shard: tuple[int, int]) -> bool:
    """Deterministic split by id hash: the same row lands in the same shard on every machine."""
    return shard[1] == 1 or int(stable_id("shard", row_id), 16) % shard[1] == shard[0]


def sample_seed(settings: StageSettings, sample_id: str) -> int:
    return int(stable_id(settings.seed, sample_id), 16) % SEED_RANGE


def make_samples(stage: str, row: dict, indices: Iterable[int], settings: StageSettings) -> list[Sample]:
    """The requests for one input row. Instructions draw category and difficulty per sample; the other
    stages share one prompt (and so the server's prefix cache) across a row's samples."""
    samples, shared = [], None
    for index in indices:
        sample_id = stable_id(row["id"], stage, index)
        sampled: dict = {}
        if stage == "instructions":
            rng = random.Random(f"{settings.seed}:{sample_id}")
            sampled = {"category": rng.choice(settings.categories), "difficulty": rng.choice(settings.difficulties)}
            prompt = _build(stage, {**row, **sampled}, rng, settings)
        else:
            shared = shared or _build(stage, row, random.Random(f"{settings.seed}:{stage}:{row['id']}"), settings)
            prompt = shared
        request = Request.from_prompt(prompt, seed=sample_seed(settings, sample_id))
        samples.append(Sample(row=row, index=index, id=sample_id, sampled=sampled, request=request))
    return samples


def _build(stage: str, row: dict, rng: random.Random, settings: StageSettings) -> Any:
    try:
        return build_prompt(
            stage, row, rng=rng, chat=settings.chat, num_fewshot=settings.num_fewshot,
            prompt_format=settings.prompt_format,
        )  # fmt: skip
    except ValueError as exc:
        raise UserError(f"input row {row.get('id')!r}: {exc}") from None


def judge(
    stage: str, sample: Sample, completion: Completion, provenance: dict, prompt_format: str
) -> tuple[dict, str | None]:
    """The output row, or the drop record and its reason (cut off by the length limit, or not parseable)."""
    common = {"id": sample.id, "parent_id": sample.row["id"], **provenance, "sample_index": sample.index}
    common["finish_reason"] = completion.finish_reason
    if completion.finish_reason == "length":
        reason = "length"
    else:
        parsed = parse_output(stage, completion.text, prompt_format)
        if parsed.fields is not None:
            return {**sample.row, **sample.sampled, **parsed.fields, **common}, None
        reason = parsed.drop_reason or "unparseable"
    return {**common, "drop_reason": reason, "num_tokens": completion.num_tokens}, reason


def _check_rows(stage: str, rows: list[dict], source: str) -> None:
    problems = [f"row {i + 1}: missing {f!r}" for i, r in enumerate(rows) for f in REQUIRED_INPUT[stage] if f not in r]
    seen: Counter = Counter(str(row.get("id")) for row in rows)
    problems += [
        f"id {row_id!r} appears {count} times (ids must be unique)" for row_id, count in seen.items() if count > 1
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(f"{source}: " + "; ".join(problems[:5]) + more)


def _check_same_settings(paths: Iterable[Path], run_fp: str) -> None:
    for path in paths:
        if not path.exists() or path.stat().st_size == 0:
            continue
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
        try:
            old = json.loads(first).get("fingerprint")
        except (json.JSONDecodeError, AttributeError):
            continue  # a torn or foreign first line: the appender and finished_ids deal with it
        if old is not None and old != run_fp:
            raise UserError(
                f"{path} holds rows made with other settings (fingerprint {old}, now {run_fp}: another model, "
                "prompt, sampling or --seed); write to a new --output, or delete it to start over"
            )


def _chunks(stage: str, todo: list[tuple[dict, list[int]]], settings: StageSettings, size: int) -> Iterator[list]:
    chunk: list[Sample] = []
    for row, indices in todo:
        chunk.extend(make_samples(stage, row, indices, settings))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_stage(
    stage: Stage,
    rows: Iterable[dict],
    output: str | Path,
    engine: Engine,
    settings: StageSettings,
    source: str = "input",
) -> dict[str, Any]:
    """Generate ``settings.n`` samples per input row into ``output``, skipping samples already decided."""
    rows = list(rows)
    _check_rows(stage, rows, source)
    output, dropped_file = Path(output), dropped_path(output)
    prompt_fp = prompt_fingerprint(
        stage, chat=settings.chat, num_fewshot=num_fewshot_for(stage, settings.num_fewshot),
        prompt_format=settings.prompt_format,
    )  # fmt: skip
    run_fp = run_fingerprint(stage, settings, engine.model, prompt_fp)
    _check_same_settings((output, dropped_file), run_fp)
    done = finished_ids(output) | finished_ids(dropped_file)
    todo = []
    for row in rows:
        indices = [i for i in range(settings.n) if stable_id(row["id"], stage, i) not in done]
        if indices:
            todo.append((row, indices))
    provenance = {"round": settings.round, "fingerprint": run_fp}
    sampling = Sampling(settings.temperature, settings.top_p, settings.max_new_tokens)
    kept, drops, tokens, start = 0, Counter(), 0, time.perf_counter()
    bar = tqdm(total=len(todo), unit="row", desc=stage, disable=not settings.progress, file=sys.stderr)
    with JsonlAppender(output) as kept_out, JsonlAppender(dropped_file) as dropped_out, bar:
        for chunk in _chunks(stage, todo, settings, settings.batch_size or engine.default_batch_size):
            completions = engine.generate([sample.request for sample in chunk], sampling)
            for sample, completion in zip(chunk, completions):
                row, reason = judge(stage, sample, completion, provenance, settings.prompt_format)
                if reason is None:
                    kept_out.write(row)
                    kept += 1
                else:
                    drops[reason] += 1
                    dropped_out.write({**row, "text": completion.text} if settings.keep_dropped else row)
                tokens += completion.num_tokens
            bar.update(len({sample.row["id"] for sample in chunk}))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}", kept=kept)
    elapsed = time.perf_counter() - start
    return {
        "stage": stage,
        "rows_in": len(rows),
        "rows_already_done": len(rows) - len(todo),
        "rows_generated": len(todo),
        "samples": kept + sum(drops.values()),
        "kept": kept,
        "dropped": dict(sorted(drops.items())),
        "tokens": tokens,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(len(todo) / elapsed, 3) if elapsed else None,
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else None,
        "totals": stage_totals(output, dropped_file),
        "engine": {"name": engine.name, "model": engine.model, **engine.counters},
        "fingerprint": run_fp,
        "output": str(output),
        "dropped_file": str(dropped_file),
        "settings": asdict(settings),
    }


def stage_totals(output: Path, dropped_file: Path) -> dict[str, Any]:
    """Counts over the whole files (this run and every earlier, resumed one)."""
    with output.open("rb") as handle:
        kept = sum(1 for line in handle if line.strip())
    reasons = (
        Counter(row.get("drop_reason") for row in read_jsonl_files(dropped_file)) if _nonempty(dropped_file) else {}
    )
    return {"kept": kept, "dropped": dict(sorted(reasons.items()))}


def _nonempty(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def write_concepts(rows: Iterable[dict], output: str | Path, engine: Engine, settings: StageSettings | None = None):
    """Concepts for each seed row (needs ``id``, ``seed``); adds ``concepts`` (list of strings)."""
    return run_stage("concepts", rows, output, engine, settings or StageSettings.for_stage("concepts"))


def write_instructions(rows: Iterable[dict], output: str | Path, engine: Engine, settings: StageSettings | None = None):
    """Instructions from concept rows (needs ``id``, ``concepts``); adds instruction, category, difficulty."""
    return run_stage("instructions", rows, output, engine, settings or StageSettings.for_stage("instructions"))


def write_responses(rows: Iterable[dict], output: str | Path, engine: Engine, settings: StageSettings | None = None):
    """``n`` responses per instruction row (needs ``id``, ``instruction``); adds ``response``, ``code``, ``tests``."""
    return run_stage("responses", rows, output, engine, settings or StageSettings.for_stage("responses"))


def shard_output(output: str | Path, shard: tuple[int, int]) -> Path:
    """``out.jsonl`` for one shard, ``out.shard-00002-of-00008.jsonl`` for shard 2 of 8."""
    output = Path(output)
    if shard[1] == 1:
        return output
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(f"{stem}.shard-{shard[0]:05d}-of-{shard[1]:05d}.jsonl")


def summary_lines(stats: dict[str, Any]) -> list[str]:
    """The end-of-run summary: counts in, out and dropped by reason."""
    dropped = ", ".join(f"{reason} {count}" for reason, count in stats["dropped"].items()) or "none"
    totals = stats["totals"]
    total_dropped = sum(totals["dropped"].values())
    engine = stats["engine"]
    counters = "".join(f", {value} {key}" for key, value in engine.items() if key not in ("name", "model"))
    return [
        f"{stats['stage']}: {stats['rows_in']} input rows ({stats['rows_already_done']} already done), "
        f"{stats['samples']} samples generated: {stats['kept']} kept, {stats['samples'] - stats['kept']} dropped "
        f"({dropped})",
        f"{stats['tokens']} tokens in {stats['elapsed_s']:.1f}s ({stats['tokens_per_s'] or 0:.0f} tok/s, "
        f"{stats['rows_per_s'] or 0:.2f} rows/s); engine {engine['name']} ({engine['model']}){counters}",
        f"{stats['output']}: {totals['kept']} rows in total; {stats['dropped_file']}: {total_dropped} dropped in total",
    ]


def generate_file(
    stage: Stage,
    input: str,
    output: str | Path,
    engine: LazyEngine,
    settings: StageSettings,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """One stage over the rows of ``input`` (a JSONL file or glob) that fall in ``shard``, appended to ``output`` (or
    its shard's file, :func:`shard_output`), with the counts written beside it. The engine loads once the rows are
    read and checked. Returns the stats."""
    refuse_output_among_inputs(input, output)
    rows = [row for row in read_jsonl_files(input, required=REQUIRED_INPUT[stage]) if in_shard(str(row["id"]), shard)]
    target = shard_output(output, shard)
    stats = run_stage(stage, rows, target, engine.get(), settings, source=input)
    stats.update(shard=f"{shard[0]}/{shard[1]}", input=input)
    write_stats(target, stats)
    return stats


@document_flags(EngineChoice, SamplingOptions)
def generate_command(
    *,
    stage: Stage,
    input: str,
    output: str,
    engine: Literal["hf", "vllm", "openai"] = "hf",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    chat: bool = False,
    preset: Literal["starcoder2-instruct", "selfcodealign"] = "starcoder2-instruct",
    prompt_format: Literal["starcoder2-instruct", "selfcodealign", "selfalign-v1"] | None = None,
    n: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    num_fewshot: int | None = None,
    categories: list[str] | None = None,
    difficulties: list[str] | None = None,
    batch_size: int | None = None,
    concurrency: int = 32,
    request_timeout: float = 600.0,
    max_retries: int = 5,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    vllm_kwargs: dict[str, Any] | None = None,
    shard: str | None = None,
    round: int = 0,
    seed: int = 0,
    keep_dropped: bool = False,
    progress: bool = True,
) -> None:
    """Run one generation stage: concepts from seeds, instructions from concepts, responses from instructions.

    Appends rows to OUTPUT and records dropped samples (cut off, unparseable) in OUTPUT.dropped.jsonl; rerunning
    the same command resumes where it stopped. Counts and the settings go to OUTPUT.stats.json. The engine and
    sampling flags are the fields of EngineChoice and SamplingOptions (lightning_selfalign.options), which
    selfalign self-align takes as --generation.X.

    Args:
        stage: concepts (reads id, seed), instructions (reads id, seed, concepts; samples category and difficulty per
            row) or responses (reads id, instruction; writes response, code, tests).
        input: JSONL file (or glob, e.g. 'instructions.shard-*.jsonl') of the previous stage's rows.
        output: JSONL file to append to; with more than one shard, '.shard-0000i-of-0000n' is inserted.
        model: model folder or Hub name (hf, vllm); the served model's name (openai; default: the server's first).
        n: samples per input row (default: the preset's; 10 for responses, 1 otherwise).
        max_new_tokens: longest generation; longer samples are dropped as 'length' (default: the preset's, 1536).
        shard: 'i/n' to process only shard i of n (rows split by id hash); default: the launcher's RANK/WORLD_SIZE
            (torchrun) or SLURM_PROCID/SLURM_NTASKS when set, else 0/1.
        round: self-alignment round stored in every row.
        keep_dropped: also store the generated text of dropped samples in OUTPUT.dropped.jsonl, for inspection.
        progress: show the progress bar.
    """
    sampling, choice = from_flags(SamplingOptions, locals()), from_flags(EngineChoice, locals())
    settings = sampling.stage_settings(
        stage, n=n, max_new_tokens=max_new_tokens, round=round, batch_size=batch_size, keep_dropped=keep_dropped,
        progress=progress,
    )  # fmt: skip
    problems = settings.problems() + choice.problems()
    if model is None and engine != "openai":
        problems.append(f"--model is required with --engine {engine}")
    if problems:
        raise UserError("; ".join(problems))
    with LazyEngine(lambda: choice.load(model)) as backend:
        stats = generate_file(stage, input, output, backend, settings, parse_shard(shard))
    for line in summary_lines(stats):
        print(line)


__all__ = [
    "StageSettings",
    "dropped_path",
    "generate_command",
    "generate_file",
    "parse_shard",
    "run_stage",
    "write_concepts",
    "write_instructions",
    "write_responses",
]
