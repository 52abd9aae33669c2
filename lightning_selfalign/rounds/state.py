"""Round state and files: the stage names (:data:`STAGES`), ``WORKDIR/state.json`` (:class:`RoundState`, the
stage each round reached, its counts and an event log) and where each round's files live (:class:`RoundPaths`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("seeds", "concepts", "instructions", "responses", "executed", "curated", "trained", "exported", "evaluated")
DATA_STAGES = STAGES[:6]
SHARDED = DATA_STAGES[:5]  # each shard of a sharded round writes these itself; curation sees them all merged


class RoundState:
    """``WORKDIR/state.json``: per round the last stage reached, its counts and facts, and an event log.

    Read from disk on every access and replaced atomically on every change, so the trainer process and the
    worker process it starts (one at a time) see each other's progress. Processes that work at once keep a file each
    (``file``: a shard's progress, :func:`~lightning_selfalign.rounds.shards.shard_state`)."""

    def __init__(self, workdir: str | Path, file: str = "state.json") -> None:
        self.path = Path(workdir) / file

    def data(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": 1, "base": {}, "rounds": {}, "events": []}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def round(self, round: int) -> dict[str, Any]:
        return self.data()["rounds"].get(str(round), {})

    def stage(self, round: int) -> str | None:
        return self.round(round).get("stage")

    def reached(self, round: int, stage: str) -> bool:
        current = self.stage(round)
        return current is not None and STAGES.index(current) >= STAGES.index(stage)

    def record(self, round: int, stage: str, **facts: Any) -> None:
        """Round ``round`` reached ``stage``; ``facts`` (counts, paths, scores) are merged into its entry."""
        assert stage in STAGES, f"unknown stage {stage!r}"
        data = self.data()
        entry = data["rounds"].setdefault(str(round), {"counts": {}})
        current = entry.get("stage")
        assert current is None or STAGES.index(stage) >= STAGES.index(current), f"{stage} after {current}"
        entry["stage"] = stage
        entry.update(facts)
        data["events"].append({"round": round, "stage": stage, "pid": os.getpid(), "time": round_time()})
        self._write(data)

    def count(self, round: int, stage: str, rows: int) -> None:
        data = self.data()
        data["rounds"].setdefault(str(round), {"counts": {}})["counts"][stage] = rows
        self._write(data)

    def set_base(self, **facts: Any) -> None:
        data = self.data()
        data["base"].update(facts)
        self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, self.path)


def round_time() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class RoundPaths:
    """Where round ``round``'s files live: ``WORKDIR/round-<r>/``. With a ``shard`` (i, n) of several, the seeds,
    generated and executed files are that shard's own (``concepts.shard-0000i-of-0000n.jsonl``)."""

    workdir: Path
    round: int
    shard: tuple[int, int] = (0, 1)

    @property
    def dir(self) -> Path:
        return self.workdir / f"round-{self.round}"

    def __getattr__(self, name: str) -> Path:
        files = {"seeds": "seeds.jsonl", "concepts": "concepts.jsonl", "instructions": "instructions.jsonl",
                 "responses": "responses.jsonl", "executed": "executed.jsonl", "peers": "peers.jsonl",
                 "sft": "sft.jsonl", "model": "model", "checkpoint": "trained.ckpt",
                 "evaluation": "humaneval.json"}  # fmt: skip
        if name not in files:
            raise AttributeError(name)
        if name in SHARDED and self.shard != (0, 1):
            from lightning_selfalign.stages import shard_output

            return shard_output(self.dir / files[name], self.shard)
        return self.dir / files[name]
