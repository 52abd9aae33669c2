"""Round settings: the options of ``selfalign self-align`` as typed dataclasses (:class:`RoundSettings` and its
parts: :class:`SeedOptions`, :class:`GenerationOptions` and the shared
:class:`~lightning_selfalign.options.ExecutionOptions` and :class:`~lightning_selfalign.curation.CurationConfig`),
checked by :meth:`RoundSettings.problems`, and saved to / loaded from ``WORKDIR/settings.json``
(:func:`save_settings`, :func:`load_settings`) so the between-rounds worker process reads the same settings as the
command that started the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_selfalign.curation import CurationConfig
from lightning_selfalign.errors import UserError
from lightning_selfalign.options import EngineChoice, ExecutionOptions, SamplingOptions
from lightning_selfalign.presets import PRESETS
from lightning_selfalign.seeds import SeedFilters


@dataclass
class SeedOptions:
    """Where seeds come from and how many each round uses.

    Attributes:
        file: a seeds JSONL (from selfalign seeds, e.g. with its docstring judge); else seeds are mined from source.
        source: directories or .py files to mine (default: the standard library).
        per_round: seeds per round, consecutive slices of the pool (default: all of them, every round).
        filters: the mining rules, as selfalign seeds takes them (default: the reference's).
        workers: processes parsing files while mining.
    """

    file: str | None = None
    source: list[str] | None = None
    per_round: int | None = None
    filters: SeedFilters = field(default_factory=SeedFilters)
    workers: int | None = None

    def __post_init__(self) -> None:  # from settings.json or a config: a mapping of the fields to change
        if isinstance(self.filters, dict):
            self.filters = SeedFilters(**self.filters)


@dataclass
class GenerationOptions(EngineChoice, SamplingOptions):
    """The engine and sampling of the three generation stages, and how a served model follows each round's weights.

    Engine and sampling are the shared :class:`~lightning_selfalign.options.EngineChoice` and
    :class:`~lightning_selfalign.options.SamplingOptions` (``selfalign generate`` takes the same as flat flags).

    Attributes:
        served_model: openai: the served model's name (requests name it; the server holds the weights).
        reload_command: openai: shell command that makes the server serve another model, run (under sh -c) before a
            model generates or is evaluated unless /v1/models already reports it; ``{model_dir}`` becomes the
            model's folder (shell-quoted; also in $SELFALIGN_MODEL_DIR), ``{base_url}`` and ``{served_model}``
            likewise. E.g. for SGLang or selfalign serve --allow_reload true: curl -sf -H 'Content-Type:
            application/json' -d "{\\"model_path\\": \\"$SELFALIGN_MODEL_DIR\\"}" http://HOST:PORT/update_weights_from_disk;
            for vllm serve, a script that restarts it on {model_dir} (it may return while the server starts).
            Default: the server's weights generate every round.
        reload_timeout: openai: seconds the reload command and the wait for the server to report the model may take.
        reload_wait: openai: after the reload command, wait until /v1/models lists the folder as a model's root or
            id (vllm serve, SGLang and selfalign serve do); false: trust the command to return once it serves.
        task_writer: which model writes a round's concepts and instructions: ``round`` (the round's generator, which
            also writes the responses: the reference's one model) or ``base`` (the base model in every round, so that
            fine-tuning on instruction -> response rows, which teach nothing of those two stages, cannot erode them;
            measured in BENCHMARKS.md, the code world's eighth session). With openai it needs
            --generation.reload_command, which then switches the server between the two.
    """

    served_model: str | None = None
    reload_command: str | None = None
    reload_timeout: float = 1800.0
    reload_wait: bool = True
    task_writer: Literal["round", "base"] = "round"

    def engine_model(self, model_dir: str) -> str | None:
        """The model name requests carry: the served model's with the openai engine, else the folder itself."""
        return self.served_model if self.engine == "openai" else model_dir


@dataclass
class RoundSettings:
    """Everything a round needs; saved as ``WORKDIR/settings.json`` (the worker process reads it there)."""

    model: str
    train_config: str
    rounds: int = 2
    epochs_per_round: int = 1
    train_args: list[str] = field(default_factory=list)
    seeds: SeedOptions = field(default_factory=SeedOptions)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    curation: CurationConfig = field(default_factory=CurationConfig)
    execution_filter: bool = True
    peer_tests: bool = False
    evaluate: bool = True
    benchmark_file: str | None = None
    eval_limit: int | None = None
    eval_max_new_tokens: int = 512
    eval_chat: bool = True
    eval_base_chat: bool = False
    rollback: bool = False
    progress: bool = True
    handoff: Literal["none", "cpu", "disk"] = "cpu"
    handoff_dir: str | None = None
    round_timeout_h: float = 72.0

    def problems(self) -> list[str]:
        """Every invalid setting, named by its flag."""
        found = [] if self.rounds >= 1 else [f"--rounds must be >= 1, got {self.rounds}"]
        if self.epochs_per_round < 1:
            found.append(f"--epochs_per_round must be >= 1, got {self.epochs_per_round}")
        if not 0 < self.round_timeout_h < math.inf:
            found.append(f"--round_timeout_h must be a finite number of hours > 0, got {self.round_timeout_h}")
        if not Path(self.train_config).is_file():
            found.append(f"--train_config {self.train_config}: no such file (a LightningCLI YAML)")
        if self.seeds.file and self.seeds.source:
            found.append("give --seeds.file or --seeds.source, not both")
        if self.seeds.per_round is not None and self.seeds.per_round < 1:
            found.append(f"--seeds.per_round must be >= 1, got {self.seeds.per_round}")
        found += [problem.replace("--", "--seeds.filters.", 1) for problem in self.seeds.filters.problems()]
        found += self.generation.problems("--generation.")
        if self.generation.reload_command is not None and self.generation.engine != "openai":
            found.append("--generation.reload_command reloads an OpenAI-compatible server: it needs --generation."
                         "engine openai (the hf and vllm engines load each round's model themselves)")  # fmt: skip
        g = self.generation
        if g.task_writer not in ("round", "base"):
            found.append(f"--generation.task_writer must be round or base, got {g.task_writer!r}")
        elif g.task_writer == "base" and g.engine == "openai" and not g.reload_command:
            found.append("--generation.task_writer base with --generation.engine openai needs --generation."
                         "reload_command: without it the server's weights would write every stage")  # fmt: skip
        if self.generation.reload_timeout <= 0:
            found.append(f"--generation.reload_timeout must be > 0 seconds, got {self.generation.reload_timeout}")
        if self.rollback and not self.evaluate:
            found.append("--rollback compares each round's pass@1: it needs --evaluate true")
        if self.benchmark_file is not None and not Path(self.benchmark_file).is_file():
            found.append(f"--benchmark_file {self.benchmark_file}: no such file (HumanEval-format JSONL)")
        if self.eval_limit is not None and self.eval_limit < 1:
            found.append(f"--eval_limit must be >= 1, got {self.eval_limit}")
        found += self.execution.problems("--execution.")
        if (self.curation.min_peer_passes or self.curation.select == "peer_agreement") and not self.peer_tests:
            found.append("--curation.min_peer_passes and --curation.select peer_agreement read the peer checks: they "
                         "need --peer_tests true")  # fmt: skip
        return found + self.generation_problems() + [f"--curation: {p}" for p in self.curation.problems()]

    def generation_problems(self) -> list[str]:
        """The generation options checked as each stage will use them."""
        if self.generation.preset not in PRESETS:
            return [f"--generation.preset must be one of {', '.join(PRESETS)}, got {self.generation.preset!r}"]
        g = self.generation
        problems = g.stage_settings("responses", batch_size=g.batch_size).problems()
        return [problem.replace("--", "--generation.", 1) for problem in problems]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundSettings:
        parts = {"seeds": SeedOptions, "generation": GenerationOptions, "execution": ExecutionOptions,
                 "curation": CurationConfig}  # fmt: skip
        return cls(**{key: parts[key](**value) if key in parts else value for key, value in data.items()})


def save_settings(workdir: Path, settings: RoundSettings) -> Path:
    path = workdir / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(settings), indent=2, default=list) + "\n", encoding="utf-8")
    return path


def load_settings(workdir: Path) -> RoundSettings:
    path = workdir / "settings.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file; start the run with selfalign self-align")
    return RoundSettings.from_dict(json.loads(path.read_text(encoding="utf-8")))
