"""What one self-align work directory holds, read for the report (:func:`collect_arm`): per round the rows
through every stage, the execution verdicts and error reasons, what generation and curation dropped, pass@1,
and the training loss. Nothing here raises on a partial run: what is absent is listed in :attr:`Arm.missing`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl
from lightning_selfalign.report.training_logs import LossPoint, read_loss
from lightning_selfalign.rounds.state import STAGES, RoundPaths

# "passed" is not a stage: it is the executed rows whose verdict is pass, the step the execution filter adds.
FUNNEL = ("seeds", "concepts", "instructions", "responses", "executed", "passed", "curated")
GENERATION_STAGES = ("concepts", "instructions", "responses")
VERDICTS = ("pass", "fail", "error", "timeout", "memory", "crash", "no_tests", "policy")
REASON_CHARS = 90


@dataclass
class RoundData:
    """One round of one arm, as far as it got."""

    round: int
    stage: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)  # funnel steps counted from a file state.json has no count for
    verdicts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)  # "responses: no_code" or "curate/dedup: duplicate" -> rows
    pass_at_1: float | None = None
    rolled_back: bool = False
    global_step: int | None = None


@dataclass
class Arm:
    """One work directory: its settings, base model score, rounds, loss curve and what is missing."""

    label: str
    workdir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    base_pass_at_1: float | None = None
    rounds: list[RoundData] = field(default_factory=list)
    loss: list[LossPoint] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def planned_rounds(self) -> int | None:
        value = self.settings.get("rounds")
        return value if isinstance(value, int) else None

    def summary(self) -> dict[str, str]:
        """The settings a reader compares arms by, as display strings."""
        generation = self.settings.get("generation") if isinstance(self.settings.get("generation"), dict) else {}
        reached = sum(1 for entry in self.rounds if entry.stage == "evaluated")
        planned = self.planned_rounds
        facts = {
            "model": str(self.settings.get("model") or self.base_model or "?"),
            "rounds": f"{reached} finished of {planned if planned is not None else '?'} planned",
            "responses per instruction (n)": str(generation.get("n", "?")),
            "epochs per round": str(self.settings.get("epochs_per_round", "?")),
        }
        if self.settings:
            facts["benchmark"] = str(self.settings.get("benchmark_file") or "HumanEval")
        if "execution_filter" in self.settings:
            facts["execution filter"] = "on" if self.settings["execution_filter"] else "off (unfiltered ablation)"
        return facts


def collect_arm(workdir: str | Path, label: str) -> Arm:
    """Read everything the report shows from ``workdir``; absent or unreadable parts go to ``missing``."""
    workdir = Path(workdir)
    arm = Arm(label=label, workdir=workdir)
    state = read_json(workdir / "state.json", arm.missing) or {}
    arm.settings = read_json(workdir / "settings.json", arm.missing) or {}
    base = state.get("base") if isinstance(state.get("base"), dict) else {}
    arm.base_model = base.get("model")
    arm.base_pass_at_1 = number(base.get("pass@1"))
    if arm.base_pass_at_1 is None:
        arm.base_pass_at_1 = number((read_json(workdir / "base-humaneval.json", None) or {}).get("pass@1"))
    if arm.base_pass_at_1 is None:
        arm.missing.append("base model: no pass@1 (not evaluated yet, or the run has --evaluate false)")
    entries = state.get("rounds") if isinstance(state.get("rounds"), dict) else {}
    for r in round_numbers(workdir, entries):
        arm.rounds.append(collect_round(workdir, r, entries.get(str(r)) or {}, arm.missing))
    note_unstarted_rounds(arm)
    ends = {entry.round: entry.global_step for entry in arm.rounds if entry.global_step is not None}
    arm.loss = read_loss(workdir / "train", ends, arm.settings.get("epochs_per_round"), arm.missing)
    return arm


def round_numbers(workdir: Path, entries: dict[str, Any]) -> list[int]:
    """Rounds in state.json plus round-<r>/ folders a killed run left before state.json knew of them."""
    found = {int(key) for key in entries if str(key).lstrip("-").isdigit()}
    for folder in workdir.glob("round-*"):
        match = re.fullmatch(r"round-(\d+)", folder.name)
        if match and folder.is_dir():
            found.add(int(match.group(1)))
    return sorted(found)


def collect_round(workdir: Path, r: int, entry: dict[str, Any], missing: list[str]) -> RoundData:
    paths = RoundPaths(workdir, r)
    data = RoundData(round=r, stage=entry.get("stage"), rolled_back=bool(entry.get("rolled_back")))
    data.global_step = entry.get("global_step") if isinstance(entry.get("global_step"), int) else None
    counts = entry.get("counts") or {}
    for step in FUNNEL:
        if isinstance(counts.get(step), int):
            data.counts[step] = counts[step]
    read_verdicts(paths.executed, data, missing)
    count_unrecorded_files(paths, data)
    data.drops = read_drops(paths.dir, missing)
    data.pass_at_1 = number(entry.get("pass@1"))
    if data.pass_at_1 is None:
        data.pass_at_1 = number((read_json(paths.evaluation, None) or {}).get("pass@1"))
    note_round_gaps(data, missing)
    return data


def read_verdicts(path: Path, data: RoundData, missing: list[str]) -> None:
    """Verdict counts and the commonest failure reasons of ``executed.jsonl``; rows before a torn line still count."""
    if not path.is_file():
        return
    try:
        for row in read_jsonl(path, allow_empty=True):
            verdict = str(row.get("verdict") or "unknown")
            data.verdicts[verdict] += 1
            if verdict != "pass" and row.get("reason"):
                data.reasons[short_reason(str(row["reason"]))] += 1
    except UserError as exc:
        missing.append(f"round {data.round}: executed.jsonl read only up to a bad line: {exc}")
    if data.verdicts:
        data.counts["passed"] = data.verdicts.get("pass", 0)


def short_reason(reason: str) -> str:
    lines = reason.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return first if len(first) <= REASON_CHARS else first[: REASON_CHARS - 1] + "…"


def count_unrecorded_files(paths: RoundPaths, data: RoundData) -> None:
    """A stage killed half-way has rows on disk but no count in state.json: count the rows, marked partial."""
    files = {"seeds": paths.seeds, "concepts": paths.concepts, "instructions": paths.instructions,
             "responses": paths.responses, "curated": paths.sft}  # fmt: skip
    for step, path in files.items():
        if step not in data.counts and path.is_file():
            with path.open("rb") as handle:
                data.counts[step] = sum(1 for line in handle if line.strip())
            data.partial.add(step)
    if "executed" not in data.counts and data.verdicts:
        data.counts["executed"] = sum(data.verdicts.values())
        data.partial.add("executed")


def read_drops(folder: Path, missing: list[str]) -> dict[str, int]:
    """Rows dropped by reason: generation stats (``totals.dropped``) and curation stats (``dropped`` per step)."""
    drops: dict[str, int] = {}
    for stage in GENERATION_STAGES:
        stats = read_json(folder / f"{stage}.stats.json", None) or {}
        totals = stats.get("totals") if isinstance(stats.get("totals"), dict) else stats
        for reason, rows in (totals.get("dropped") or {}).items():
            if isinstance(rows, int) and rows:
                drops[f"{stage}: {reason}"] = rows
    curation = read_json(folder / "sft.stats.json", None) or {}
    for step, reasons in (curation.get("dropped") or {}).items():
        for reason, rows in (reasons or {}).items() if isinstance(reasons, dict) else ():
            if isinstance(rows, int) and rows:
                drops[f"curate/{step}: {reason}"] = rows
    return drops


def note_round_gaps(data: RoundData, missing: list[str]) -> None:
    r, stage = data.round, data.stage
    if stage is None:
        missing.append(f"round {r}: not in state.json (files only)")
        return
    if stage not in STAGES:
        missing.append(f"round {r}: unknown stage {stage!r} in state.json")
        return
    reached = STAGES.index(stage)
    if reached < len(STAGES) - 1:
        missing.append(f"round {r}: stopped at '{stage}'; not yet {', '.join(STAGES[reached + 1 :])}")
    if reached >= STAGES.index("executed") and not data.verdicts:
        missing.append(f"round {r}: no executed.jsonl rows, so no verdicts")
    if stage == "evaluated" and data.pass_at_1 is None:
        missing.append(f"round {r}: evaluated without a pass@1 (evaluation off)")


def note_unstarted_rounds(arm: Arm) -> None:
    planned = arm.planned_rounds
    if planned is None:
        if arm.settings:  # an absent settings.json is already noted
            arm.missing.append("settings.json has no 'rounds': planned rounds unknown")
        return
    started = {entry.round for entry in arm.rounds}
    todo = [r for r in range(planned) if r not in started]
    if todo:
        arm.missing.append(f"rounds not started: {', '.join(map(str, todo))} (of {planned} planned)")


def verdict_order(rounds: Iterable[RoundData]) -> list[str]:
    """The verdicts seen, known ones in :data:`VERDICTS` order first."""
    seen = {verdict for entry in rounds for verdict in entry.verdicts}
    return [verdict for verdict in VERDICTS if verdict in seen] + sorted(seen - set(VERDICTS))


def read_json(path: Path, missing: list[str] | None) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None (noted in ``missing`` when given) if absent or unreadable."""
    if not path.is_file():
        if missing is not None:
            missing.append(f"{path.name}: no such file")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if missing is not None:
            missing.append(f"{path.name}: unreadable ({exc})")
        return None
    if not isinstance(value, dict):
        if missing is not None:
            missing.append(f"{path.name}: not a JSON object")
        return None
    return value


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
