"""Between rounds: which model generates a round's data (:func:`generator_for`), which SFT file is trained on
(:func:`train_files_for`), HumanEval evaluation of a round's model (:func:`evaluate_model`, :func:`evaluate_base`)
and the rollback decision (:func:`finish_round`, :func:`best_so_far`).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightning_selfalign.rounds.settings import RoundSettings
from lightning_selfalign.rounds.state import RoundPaths, RoundState


def generator_for(state: RoundState, round: int, base_model: str) -> str:
    """The model that writes round ``round``'s data: the base for round 0, else what round ``round - 1`` chose."""
    return base_model if round == 0 else state.round(round - 1).get("next_model") or base_model


def train_files_for(state: RoundState, round: int) -> str | None:
    """The newest SFT file with rows up to ``round``; None: the training config's own ``data.train_files``."""
    for earlier in range(round, -1, -1):
        if state.round(earlier).get("counts", {}).get("curated"):
            return str(RoundPaths(state.path.parent, earlier).sft)
    return None


def evaluate_model(model_dir: str, output: Path, settings: RoundSettings, chat: bool) -> dict[str, Any]:
    """HumanEval pass@1 (greedy) of ``model_dir`` through the generation engine, in the sandbox (a served model is
    first made to serve ``model_dir``, when a reload command is set)."""
    from lightning_selfalign.evaluation import evaluate, summary_line
    from lightning_selfalign.options import EvaluationSampling
    from lightning_selfalign.rounds.serving import serve_model

    g = settings.generation
    serve_model(model_dir, g)
    report = evaluate(
        output, benchmark_file=settings.benchmark_file, model=g.engine_model(model_dir),
        # At the engine's own batch size, so a score does not move with --generation.batch_size (padding noise).
        engine=replace(g, batch_size=None),
        sampling=EvaluationSampling(max_new_tokens=settings.eval_max_new_tokens, chat=chat),
        # A benchmark's tests are trusted: its samples are scored as they are, as by selfalign evaluate.
        execution=replace(settings.execution, policy=False),
        tokenizer=model_dir if g.engine == "openai" and chat else None, limit=settings.eval_limit,
        progress=settings.progress,
    )  # fmt: skip
    print(summary_line(report, output), file=sys.stderr)
    return report


def evaluate_base(workdir: Path, settings: RoundSettings) -> None:
    """The base model's pass@1 (completion mode, as base models are scored, unless ``eval_base_chat``): round -1 of
    the report, and the bar round 0 must clear when ``rollback`` is on."""
    state = RoundState(workdir)
    if "pass@1" not in state.data()["base"]:
        report = evaluate_model(settings.model, workdir / "base-humaneval.json", settings, chat=settings.eval_base_chat)
        state.set_base(model=settings.model, **{"pass@1": report["pass@1"]})


def finish_round(round: int, workdir: Path, settings: RoundSettings) -> None:
    """Evaluate round ``round``'s exported model and choose the model that generates the next round's data:
    this one, or (rollback on, pass@1 below the best so far) the best earlier one."""
    state, paths = RoundState(workdir), RoundPaths(workdir, round)
    if state.reached(round, "evaluated"):
        return
    if not settings.evaluate:
        state.record(round, "evaluated", **{"pass@1": None, "rolled_back": False, "next_model": str(paths.model)})
        return
    score = evaluate_model(str(paths.model), paths.evaluation, settings, chat=settings.eval_chat)["pass@1"]
    best_model, best = best_so_far(state, round, settings.model)
    rolled_back = settings.rollback and best is not None and score < best
    if rolled_back:
        warnings.warn(f"round {round}: pass@1 {score:.4f} < best {best:.4f}: rolled back to {best_model}", stacklevel=2)
    next_model = best_model if rolled_back else str(paths.model)
    state.record(round, "evaluated", **{"pass@1": score, "rolled_back": rolled_back, "next_model": next_model})


def best_so_far(state: RoundState, round: int, base_model: str) -> tuple[str, float | None]:
    """The best-scoring model before ``round`` (rounds that were kept, and the base) and its pass@1."""
    data = state.data()
    best = (base_model, data["base"].get("pass@1"))
    for earlier in range(round):
        entry = data["rounds"].get(str(earlier), {})
        score = entry.get("pass@1")
        if score is not None and not entry.get("rolled_back") and (best[1] is None or score >= best[1]):
            best = (str(RoundPaths(state.path.parent, earlier).model), score)
    return best


def write_round_report(workdir: Path) -> Path | None:
    """``WORKDIR/report/report.html`` as the run stands; a report that fails warns and never stops the loop."""
    from lightning_selfalign.report import write_report

    try:
        return write_report([workdir])
    except Exception as exc:  # the report reads everything the run wrote; a flaw there must not cost a round
        warnings.warn(f"{workdir}: the report could not be written ({type(exc).__name__}: {exc})", stacklevel=2)
        return None
