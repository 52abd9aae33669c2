"""A round's data: :func:`run_data_round` runs ``seeds -> concepts -> instructions -> responses -> executed ->
curated`` for one round with the previous round's model, skipping stages already recorded in ``state.json``, and
the stage helpers it calls (seed slicing, the lazily loaded generation engine, execution, curation).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl, write_jsonl, write_stats
from lightning_selfalign.rounds.settings import GenerationOptions, RoundSettings, SeedOptions
from lightning_selfalign.rounds.state import RoundPaths, RoundState


def run_data_round(
    round: int, model_dir: str, workdir: str | Path, settings: RoundSettings, shard: tuple[int, int] = (0, 1)
) -> Path:
    """Seeds -> concepts -> instructions -> responses -> executed -> curated for ``round``, generating with
    ``model_dir``; stages already recorded are skipped, a partly written one resumes. Returns the SFT file."""
    if shard != (0, 1):
        raise UserError(
            f"--shard {shard[0]}/{shard[1]}: a data round runs as one process (scale generation "
            "inside it with vLLM tensor parallelism or an OpenAI-compatible server); pass --shard 0/1"
        )
    workdir = Path(workdir)
    state, paths = RoundState(workdir), RoundPaths(workdir, round)
    engine = RoundEngine(model_dir, settings.generation)
    steps = {
        "seeds": lambda: write_round_seeds(round, paths.seeds, workdir, settings.seeds),
        "concepts": lambda: generate("concepts", paths.seeds, paths.concepts, engine, round, settings),
        "instructions": lambda: generate("instructions", paths.concepts, paths.instructions, engine, round, settings),
        "responses": lambda: generate("responses", paths.instructions, paths.responses, engine, round, settings),
        "executed": lambda: execute_round(paths, settings),
        "curated": lambda: curate_round(paths, settings),
    }
    try:
        for stage, make in steps.items():
            if not state.reached(round, stage):
                state.count(round, stage, make())
                state.record(round, stage, generator=model_dir)
    finally:
        engine.close()
    curated = state.round(round)["counts"]["curated"]
    if curated == 0:
        warnings.warn(
            f"round {round}: curation kept 0 rows (counts {state.round(round)['counts']}): training continues on "
            "the previous data",
            stacklevel=2,
        )
    return paths.sft


def rows_of(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path, allow_empty=True)) if path.exists() else []


def write_round_seeds(round: int, output: Path, workdir: Path, options: SeedOptions) -> int:
    """This round's slice of the seed pool (mined once into ``WORKDIR/seed-pool.jsonl``), tagged with the round."""
    pool_path = workdir / "seed-pool.jsonl"
    if not pool_path.exists():
        write_jsonl(pool_path, seed_pool(options))
    pool = rows_of(pool_path)
    if not pool:
        raise UserError(f"{pool_path}: no seeds; check --seeds.file / --seeds.source")
    size = options.per_round or len(pool)
    picked = [pool[(round * size + k) % len(pool)] for k in range(min(size, len(pool)))]
    return write_jsonl(output, [{**row, "round": round} for row in picked])


def seed_pool(options: SeedOptions) -> list[dict[str, Any]]:
    from lightning_selfalign.records import REQUIRED_SEED
    from lightning_selfalign.seeds import mine_seeds

    if options.file:
        return list(read_jsonl(options.file, required=REQUIRED_SEED))
    rows, _ = mine_seeds(options.source, options.filters, options.workers)
    return rows


class RoundEngine:
    """The generation engine, loaded on first use (a resumed round past generation never loads the model); with the
    openai engine, first use makes the server serve ``model_dir`` (:func:`~.serving.serve_model`)."""

    def __init__(self, model_dir: str, options: GenerationOptions) -> None:
        self.model_dir, self.options, self._engine = model_dir, options, None

    def get(self) -> Any:
        from lightning_selfalign.engines import EngineOptions, load_engine
        from lightning_selfalign.rounds.serving import serve_model

        if self._engine is None:
            o = self.options
            serve_model(self.model_dir, o)
            engine_options = EngineOptions(
                base_url=o.base_url, api_key=o.api_key, concurrency=o.concurrency, dtype=o.dtype,
                tensor_parallel_size=o.tensor_parallel_size, gpu_memory_utilization=o.gpu_memory_utilization,
                batch_size=o.batch_size, extra=dict(o.vllm_kwargs or {}),
            )  # fmt: skip
            model = o.served_model if o.engine == "openai" else self.model_dir
            self._engine = load_engine(o.engine, model, engine_options)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def generate(stage: str, input: Path, output: Path, engine: RoundEngine, round: int, settings: RoundSettings) -> int:
    """One generation stage over the previous stage's rows; returns the rows in ``output``."""
    from lightning_selfalign.stages import run_stage

    stage_settings = settings.generation.stage_settings(stage, round, settings.progress)
    rows = rows_of(input)
    stats = run_stage(stage, rows, output, engine.get(), stage_settings, source=str(input)) if rows else None
    if stats is None:  # nothing came through the stage before: an empty output says so
        output.touch()
        return 0
    write_stats(output, stats)
    return stats["totals"]["kept"]


def execute_round(paths: RoundPaths, settings: RoundSettings) -> int:
    """The execution filter over the round's responses, on this machine or across a Ray cluster."""
    from lightning_selfalign.sandbox.batch import execute_rows
    from lightning_selfalign.sandbox.types import Limits

    e = settings.execution
    limits = Limits(timeout_s=e.timeout, memory_mb=e.memory, run_as_main=e.run_as_main, policy=e.policy)
    rows = rows_of(paths.responses)
    if e.executor == "ray":
        from lightning_selfalign.sandbox.ray_executor import execute_rows_ray

        execute_rows_ray(rows, paths.executed, limits, e.workers, e.isolation, e.allow_unsafe, e.ray_address,
                         settings.progress)  # fmt: skip
    else:
        execute_rows(rows, paths.executed, limits, e.workers, e.isolation, e.allow_unsafe, progress=settings.progress)
    return len(rows_of(paths.executed))


def curate_round(paths: RoundPaths, settings: RoundSettings) -> int:
    from lightning_selfalign.curation import curate, removed_path
    from lightning_selfalign.curation.pipeline import config_dict

    # The ablation arm keeps every parsed response, passing or not; the sandbox still ran, so its verdicts are known.
    config = replace(settings.curation, require_pass=settings.curation.require_pass and settings.execution_filter)
    result = curate(rows_of(paths.executed), config)
    write_jsonl(paths.sft, result.rows)
    write_jsonl(removed_path(paths.sft), result.removed)
    write_stats(paths.sft, {**result.stats(), "stage": "curate", "settings": config_dict(config.resolved())})
    return len(result.rows)
