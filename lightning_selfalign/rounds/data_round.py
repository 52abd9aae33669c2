"""A round's data: :func:`run_data_round` runs ``seeds -> concepts -> instructions -> responses -> executed ->
curated`` for one round with the previous round's model, skipping stages already recorded in ``state.json``, and
the stage helpers it calls: seed slicing, the lazily loaded generation engine, and the same library calls the
commands make (:func:`~lightning_selfalign.stages.generate_file`, :func:`~lightning_selfalign.sandbox.batch.
execute_file`, :func:`~lightning_selfalign.curation.curate_file`) with the round's option groups.

A sharded round is the same two halves run apart: :func:`write_shard` in each rank's process (seeds to executed
rows of its shard), then :func:`finish_data_round` in one (merge, :mod:`.shards`, and curate).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightning_selfalign.engines import LazyEngine
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl, write_jsonl
from lightning_selfalign.rounds.settings import GenerationOptions, RoundSettings, SeedOptions
from lightning_selfalign.rounds.shards import (
    PARENT,
    begun_shards,
    merge_stage,
    order_like_responses,
    shard_state,
    unfinished_shards,
)
from lightning_selfalign.rounds.state import RoundPaths, RoundState


def run_data_round(round: int, model_dir: str, workdir: str | Path, settings: RoundSettings) -> Path:
    """Seeds -> concepts -> instructions -> responses -> executed -> curated for ``round`` in this process, generating
    with ``model_dir``; stages already recorded are skipped, a partly written one resumes. A sharded round that was
    stopped is finished here shard by shard (each resumes its own files), then merged. Returns the SFT file."""
    shards = begun_shards(Path(workdir), round)
    for index in range(shards):
        write_shard(round, model_dir, workdir, settings, (index, shards))
    return finish_data_round(round, model_dir, workdir, settings, shards)


def write_shard(
    round: int, model_dir: str, workdir: str | Path, settings: RoundSettings, shard: tuple[int, int] = (0, 1)
) -> None:
    """Seeds -> concepts -> instructions -> responses -> executed for the rows of ``shard`` (the round's seeds split
    by id hash) into its own files, each stage recorded in the shard's state (``state.json`` for one process), so a
    rerun skips what is done and resumes a partial stage."""
    workdir = Path(workdir)
    if RoundState(workdir).reached(round, "executed"):
        return  # the shards are merged already
    state, paths = shard_state(workdir, round, shard), RoundPaths(workdir, round, shard)
    writer_dir = task_writer_for(model_dir, settings)
    engine = round_engine(model_dir, settings.generation)
    writer = engine if writer_dir == model_dir else round_engine(writer_dir, settings.generation)

    def respond() -> int:
        if writer is not engine:
            writer.close()  # one model in memory at a time
        return generate("responses", paths.instructions, paths.responses, engine, round, settings)

    steps = {
        "seeds": lambda: write_round_seeds(round, paths.seeds, workdir, settings.seeds, shard),
        "concepts": lambda: generate("concepts", paths.seeds, paths.concepts, writer, round, settings),
        "instructions": lambda: generate("instructions", paths.concepts, paths.instructions, writer, round, settings),
        "responses": respond,
        "executed": lambda: execute_round(paths, settings),
    }
    try:
        run_stages(state, round, steps, model_dir, writer_dir)
    finally:
        if writer is not engine:
            writer.close()
        engine.close()


def task_writer_for(model_dir: str, settings: RoundSettings) -> str:
    """The model that writes the round's concepts and instructions (``--generation.task_writer``)."""
    return settings.model if settings.generation.task_writer == "base" else model_dir


def finish_data_round(
    round: int, model_dir: str, workdir: str | Path, settings: RoundSettings, shards: int = 1
) -> Path:
    """Once every shard is written: merge the shards into the round's own files (nothing to merge for one) and
    curate, each stage recorded in ``state.json``. Returns the SFT file."""
    workdir = Path(workdir)
    state, paths = RoundState(workdir), RoundPaths(workdir, round)
    unfinished = [] if state.reached(round, "executed") else unfinished_shards(workdir, round, shards)
    if unfinished:
        raise UserError(
            f"round {round}: shard(s) {', '.join(unfinished)} not written and executed yet; rerun the same self-align "
            f"command (it finishes them), or python -m lightning_selfalign.rounds --step generate --shard I/{shards}"
        )
    merges = {stage: functools.partial(merge_stage, stage, workdir, round, shards) for stage in PARENT}
    steps = {"seeds": lambda: write_round_seeds(round, paths.seeds, workdir, settings.seeds), **merges,
             "curated": lambda: curate_round(paths, settings)}  # fmt: skip
    run_stages(state, round, steps, model_dir, task_writer_for(model_dir, settings))
    counts = state.round(round)["counts"]
    if counts["curated"] == 0:
        warnings.warn(
            f"round {round}: curation kept 0 rows (counts {counts}): training continues on the previous data",
            stacklevel=2,
        )
    return paths.sft


def run_stages(
    state: RoundState, round: int, steps: dict[str, Callable[[], int]], generator: str, task_writer: str
) -> None:
    """Run each step whose stage ``state`` has not reached, recording its row count and the stage, and with the
    concepts and instructions the model that wrote them (``task_writer``)."""
    for stage, make in steps.items():
        if not state.reached(round, stage):
            state.count(round, stage, make())
            written_by = {"task_writer": task_writer} if stage in ("concepts", "instructions") else {}
            state.record(round, stage, generator=generator, **written_by)


def rows_of(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path, allow_empty=True)) if path.exists() else []


def has_rows(path: Path) -> bool:
    return path.exists() and next(read_jsonl(path, allow_empty=True), None) is not None


def write_round_seeds(
    round: int, output: Path, workdir: Path, options: SeedOptions, shard: tuple[int, int] = (0, 1)
) -> int:
    """This round's slice of the seed pool (mined once into ``WORKDIR/seed-pool.jsonl``), tagged with the round; of a
    sharded round, the seeds of ``shard`` (split by id hash)."""
    from lightning_selfalign.stages import in_shard

    pool_path = workdir / "seed-pool.jsonl"
    if not pool_path.exists():
        write_jsonl(pool_path, seed_pool(options))
    pool = rows_of(pool_path)
    if not pool:
        raise UserError(f"{pool_path}: no seeds; check --seeds.file / --seeds.source")
    size = options.per_round or len(pool)
    picked = [pool[(round * size + k) % len(pool)] for k in range(min(size, len(pool)))]
    return write_jsonl(output, [{**row, "round": round} for row in picked if in_shard(str(row["id"]), shard)])


def seed_pool(options: SeedOptions) -> list[dict[str, Any]]:
    from lightning_selfalign.records import REQUIRED_SEED
    from lightning_selfalign.seeds import mine_seeds

    if options.file:
        return list(read_jsonl(options.file, required=REQUIRED_SEED))
    rows, _ = mine_seeds(options.source, options.filters, options.workers)
    return rows


def round_engine(model_dir: str, options: GenerationOptions) -> LazyEngine:
    """The generation engine, loaded on first use (a resumed round past generation never loads the model); with the
    openai engine, first use makes the server serve ``model_dir`` (:func:`~.serving.serve_model`)."""
    from lightning_selfalign.rounds.serving import serve_model

    def load() -> Any:
        serve_model(model_dir, options)
        return options.load(options.engine_model(model_dir))

    return LazyEngine(load)


def generate(stage: str, input: Path, output: Path, engine: LazyEngine, round: int, settings: RoundSettings) -> int:
    """One generation stage over the previous stage's rows; returns the rows in ``output``."""
    from lightning_selfalign.stages import generate_file

    if not has_rows(input):  # nothing came through the stage before: an empty output says so
        output.touch()
        return 0
    g = settings.generation
    stage_settings = g.stage_settings(stage, round=round, seed=g.seed + round, batch_size=g.batch_size,
                                      progress=settings.progress)  # fmt: skip
    return generate_file(stage, str(input), output, engine, stage_settings)["totals"]["kept"]


def execute_round(paths: RoundPaths, settings: RoundSettings) -> int:
    """The execution filter over the round's (or a shard's) responses, on this machine or across a Ray cluster; the
    executed rows end in their responses' order, so curation's input does not depend on completion order."""
    from lightning_selfalign.sandbox.batch import execute_file

    execute_file(paths.responses, paths.executed, settings.execution, allow_empty=True, progress=settings.progress)
    return order_like_responses(paths)


def curate_round(paths: RoundPaths, settings: RoundSettings) -> int:
    """Curate the round's executed rows; with ``--peer_tests``, first check passing code against its siblings'
    tests (into ``peers.jsonl``, resumable) and curate those rows."""
    from lightning_selfalign.curation import curate_file

    executed = paths.executed
    if settings.peer_tests:
        from lightning_selfalign.sandbox.peers import peer_check_file

        peer_check_file(executed, paths.peers, settings.execution, settings.progress)
        executed = paths.peers
    # The ablation arm keeps every parsed response, passing or not; the sandbox still ran, so its verdicts are known.
    config = replace(settings.curation, require_pass=settings.curation.require_pass and settings.execution_filter)
    return curate_file(str(executed), paths.sft, config, allow_empty=True)["rows_out"]
