"""Round settings: the options of ``selfalign self-align`` as typed dataclasses (:class:`RoundSettings` and its
seed, generation and execution parts), checked by :meth:`RoundSettings.problems`, and saved to / loaded from
``WORKDIR/settings.json`` (:func:`save_settings`, :func:`load_settings`) so the between-rounds worker process
reads the same settings as the command that started the run.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_selfalign.curation import CurationConfig
from lightning_selfalign.errors import UserError
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
class GenerationOptions:
    """The engine and sampling of the three generation stages (``selfalign generate``'s flags). Every sampling
    option left unset takes the preset's value.

    Attributes:
        engine: hf (transformers, in the round's worker), vllm, or openai (a running OpenAI-compatible server).
        served_model: openai: the served model's name (requests name it; the server holds the weights).
        base_url: openai: the server's URL, e.g. http://127.0.0.1:8000/v1.
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
        api_key: openai: the server's key, if it wants one.
        concurrency: openai: requests in flight at once.
        chat: send prompts through the model's chat template instead of as plain completions.
        preset: starcoder2-instruct or selfcodealign: the published settings every unset option takes.
        prompt_format: starcoder2-instruct, selfcodealign or selfalign-v1 (default: the preset's).
        n: responses per instruction (published: 10).
        temperature: sampling temperature (published: 0.7).
        top_p: nucleus sampling mass (published: 1.0).
        max_new_tokens_concepts: token budget of the concepts stage (published: 1536 in every stage).
        max_new_tokens_instructions: token budget of the instructions stage.
        max_new_tokens_responses: token budget of the responses stage.
        num_fewshot: examples per prompt (published: 8 concepts, 8 instructions, 1 responses).
        categories: task kinds the instructions stage draws (a kind listed twice is drawn twice as often).
        difficulties: difficulties the instructions stage draws (default easy, medium, hard).
        batch_size: prompts per generate call (hf) or per request batch.
        dtype: model weights' dtype for hf and vllm.
        tensor_parallel_size: vllm: GPUs per engine.
        gpu_memory_utilization: vllm: share of GPU memory the engine may take.
        vllm_kwargs: vllm: further vllm.LLM keyword arguments.
        seed: base sampling seed; round r samples with seed + r, so rounds differ even from the same seeds.
    """

    engine: Literal["hf", "vllm", "openai"] = "hf"
    served_model: str | None = None
    base_url: str | None = None
    reload_command: str | None = None
    reload_timeout: float = 1800.0
    reload_wait: bool = True
    api_key: str | None = None
    concurrency: int = 32
    chat: bool = False
    preset: Literal["starcoder2-instruct", "selfcodealign"] = "starcoder2-instruct"
    prompt_format: Literal["starcoder2-instruct", "selfcodealign", "selfalign-v1"] | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens_concepts: int | None = None
    max_new_tokens_instructions: int | None = None
    max_new_tokens_responses: int | None = None
    num_fewshot: int | None = None
    categories: list[str] | None = None
    difficulties: list[str] | None = None
    batch_size: int | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    vllm_kwargs: dict[str, Any] | None = None
    seed: int = 0

    def stage_settings(self, stage: str, round: int = 0, progress: bool = True) -> Any:
        """The ``StageSettings`` round ``round`` runs ``stage`` with (the preset filling what is left unset)."""
        from lightning_selfalign.stages import StageSettings

        return StageSettings.for_stage(
            stage, self.preset, prompt_format=self.prompt_format, n=self.n if stage == "responses" else None,
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=getattr(self, f"max_new_tokens_{stage}"),
            chat=self.chat, num_fewshot=self.num_fewshot, round=round, seed=self.seed + round,
            batch_size=self.batch_size, progress=progress,
            categories=tuple(self.categories) if self.categories else None,
            difficulties=tuple(self.difficulties) if self.difficulties else None,
        )  # fmt: skip


@dataclass
class ExecutionOptions:
    """Sandbox limits of the execution filter and of evaluation (``selfalign execute``'s flags).

    Attributes:
        timeout: seconds per sample (StarCoder2-Instruct's execution filter: 4).
        memory: address-space cap per sample process, in MB.
        run_as_main: run samples as __main__, so their `if __name__ == "__main__":` blocks run before the tests.
        workers: sandbox helpers running in parallel (on each node with the ray executor).
        isolation: auto (strongest available), bwrap, namespaces, or rlimits (unsafe; needs allow_unsafe).
        allow_unsafe: permit running generated code with rlimits only (no network/PID/filesystem isolation).
        executor: where the execution filter runs: local (this machine's sandbox pool), or ray (batches of rows go
            to one sandbox executor per node of a running Ray cluster; generated code runs in each node's sandbox
            helpers, never in a Ray worker). Needs the ray extra: pip install 'lightning-selfalign[ray]'. The
            rounds' evaluation runs locally either way.
        ray_address: the Ray cluster for the ray executor (default: auto, the cluster this machine belongs to).
        policy: refuse, without running it, a response whose code or tests reach for what no solution needs
            (frames, gc, tracing, ctypes, builtins, signal handlers, patched modules; verdict ``policy``): such
            code can forge its verdict from inside, and a model trained on what passes would learn it.
    """

    timeout: float = 4.0
    memory: int = 1024
    run_as_main: bool = False
    workers: int = 2
    isolation: str = "auto"
    allow_unsafe: bool = False
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    policy: bool = True

    def problems(self) -> list[str]:
        """Every invalid execution setting, named by its flag."""
        found = []
        if self.executor not in ("local", "ray"):
            found.append(f"--execution.executor must be local or ray, got {self.executor!r}")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            found.append("--execution.executor ray needs ray, which is not installed: "
                         "pip install 'lightning-selfalign[ray]'")  # fmt: skip
        if self.ray_address is not None and self.executor != "ray":
            found.append("--execution.ray_address is for the ray executor: add --execution.executor ray")
        return found


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

    def problems(self) -> list[str]:
        """Every invalid setting, named by its flag."""
        found = [] if self.rounds >= 1 else [f"--rounds must be >= 1, got {self.rounds}"]
        if self.epochs_per_round < 1:
            found.append(f"--epochs_per_round must be >= 1, got {self.epochs_per_round}")
        if not Path(self.train_config).is_file():
            found.append(f"--train_config {self.train_config}: no such file (a LightningCLI YAML)")
        if self.seeds.file and self.seeds.source:
            found.append("give --seeds.file or --seeds.source, not both")
        if self.seeds.per_round is not None and self.seeds.per_round < 1:
            found.append(f"--seeds.per_round must be >= 1, got {self.seeds.per_round}")
        found += [problem.replace("--", "--seeds.filters.", 1) for problem in self.seeds.filters.problems()]
        if self.generation.engine == "openai" and not self.generation.base_url:
            found.append("--generation.engine openai needs --generation.base_url")
        if self.generation.reload_command is not None and self.generation.engine != "openai":
            found.append("--generation.reload_command reloads an OpenAI-compatible server: it needs --generation."
                         "engine openai (the hf and vllm engines load each round's model themselves)")  # fmt: skip
        if self.generation.reload_timeout <= 0:
            found.append(f"--generation.reload_timeout must be > 0 seconds, got {self.generation.reload_timeout}")
        if self.rollback and not self.evaluate:
            found.append("--rollback compares each round's pass@1: it needs --evaluate true")
        if self.benchmark_file is not None and not Path(self.benchmark_file).is_file():
            found.append(f"--benchmark_file {self.benchmark_file}: no such file (HumanEval-format JSONL)")
        if self.eval_limit is not None and self.eval_limit < 1:
            found.append(f"--eval_limit must be >= 1, got {self.eval_limit}")
        found += self.execution.problems()
        return found + self.generation_problems() + [f"--curation: {p}" for p in self.curation.problems()]

    def generation_problems(self) -> list[str]:
        """The generation options checked as each stage will use them."""
        if self.generation.preset not in PRESETS:
            return [f"--generation.preset must be one of {', '.join(PRESETS)}, got {self.generation.preset!r}"]
        problems = self.generation.stage_settings("responses").problems()
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
