"""The option groups shared by the commands, the rounds and the presets: one dataclass per concern, each field
documented where it is declared (jsonargparse turns those lines into ``--help``).

- :class:`EngineChoice`: which generation backend, with its settings (:class:`~lightning_selfalign.engines.
  EngineOptions`); :meth:`EngineChoice.load` is where every command and round loads its engine;
- :class:`SamplingOptions`: how the three generation stages prompt and sample, each unset option taking the preset's
  value; :meth:`SamplingOptions.stage_settings` resolves one stage's :class:`~lightning_selfalign.stages.
  StageSettings`;
- :class:`ExecutionOptions`: the sandbox's limits and where it runs (:meth:`ExecutionOptions.limits` builds the
  :class:`~lightning_selfalign.sandbox.types.Limits`);
- :class:`EvaluationSampling`: how evaluation prompts each task and samples its answers.

The seed filters (:class:`~lightning_selfalign.seeds.SeedFilters`) and curation
(:class:`~lightning_selfalign.curation.CurationConfig`) are the other two groups; each lives beside its stage.
``selfalign generate``, ``execute``, ``evaluate`` and ``curate`` keep flat flags named as the fields: each builds its
groups with :func:`from_flags`, and :func:`document_flags` gives those flags the fields' own descriptions, so the flat
and the nested options (``selfalign self-align --generation.X``, ``--execution.X``, ``--seeds.filters.X``,
``--curation.X``) are described by the same text and cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import docstring_parser

from lightning_selfalign.engines import Engine, EngineOptions, load_engine
from lightning_selfalign.sandbox.types import Limits

if TYPE_CHECKING:
    from lightning_selfalign.stages import StageSettings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
# StarCoder2-Instruct's evaluation (evaluation/text2code.py of the reference) pre-fills the answer with a newline, a
# ```python fence and the task's prompt, so the model writes the body of the given function.
CHAT_RESPONSE_PREFIX = "\n```python\n{prompt}"


@dataclass
class EngineChoice(EngineOptions):
    """Which backend generates, with its settings.

    Attributes:
        engine: hf (transformers in this process; the CPU default), vllm (in-memory vllm.LLM, GPUs) or openai (any
            OpenAI-compatible server: vllm serve, SGLang, llama.cpp, selfalign serve).
    """

    engine: Literal["hf", "vllm", "openai"] = "hf"

    def load(self, model: str | None) -> Engine:
        """The backend for ``model`` (a folder or Hub name; with openai the served model's name)."""
        return load_engine(self.engine, model, self)

    def problems(self, prefix: str = "--") -> list[str]:
        """Every invalid engine setting, named by its flag (``prefix`` + field name)."""
        if self.engine == "openai" and not self.base_url:
            return [f"{prefix}engine openai needs {prefix}base_url, e.g. http://127.0.0.1:8000/v1"]
        return []


@dataclass
class SamplingOptions:
    """How the three generation stages prompt and sample. Every option left unset takes the preset's value.

    Attributes:
        preset: the published pipeline whose settings fill every option left unset: starcoder2-instruct
            (temperature 0.7, top_p 1.0, 1536 new tokens, n 1 / 1 / 10, 8 / 8 / 1 few-shots, function tasks only)
            or selfcodealign (its prompt layout; function 1/2, class 1/4, program 1/4). See docs/fidelity.md.
        prompt_format: prompt layout: starcoder2-instruct, selfcodealign or selfalign-v1 (this project's first
            layout); default: the preset's.
        chat: send prompts through the model's chat template (instruct models) instead of as plain completion text
            (base models).
        n: responses per instruction (published: 10); the concepts and instructions stages draw one sample per row.
        temperature: sampling temperature; 0 is greedy (published: 0.7).
        top_p: nucleus sampling mass (published: 1.0).
        max_new_tokens_concepts: token budget of the concepts stage; longer samples are dropped as 'length'
            (published: 1536 in every stage).
        max_new_tokens_instructions: token budget of the instructions stage.
        max_new_tokens_responses: token budget of the responses stage.
        num_fewshot: few-shot examples per prompt (published: 8 concepts, 8 instructions, 1 responses).
        categories: task kinds the instructions stage draws from, uniformly; a kind listed twice is drawn twice as
            often (starcoder2-instruct: function; selfcodealign: function, function, class, program).
        difficulties: difficulties the instructions stage draws from, uniformly (default: easy, medium, hard).
        seed: base of every sample's seed (each derives from it and the sample's id); round r of self-align samples
            with seed + r, so rounds differ even from the same seeds.
    """

    preset: Literal["starcoder2-instruct", "selfcodealign"] = "starcoder2-instruct"
    prompt_format: Literal["starcoder2-instruct", "selfcodealign", "selfalign-v1"] | None = None
    chat: bool = False
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens_concepts: int | None = None
    max_new_tokens_instructions: int | None = None
    max_new_tokens_responses: int | None = None
    num_fewshot: int | None = None
    categories: list[str] | None = None
    difficulties: list[str] | None = None
    seed: int = 0

    def stage_settings(self, stage: str, **run: Any) -> StageSettings:
        """The settings ``stage`` runs with, the preset filling every option left unset. ``run`` gives the run's own
        fields (round, batch_size, keep_dropped, progress) and overrides, each one that is not None winning."""
        from lightning_selfalign.stages import StageSettings

        chosen = {
            "prompt_format": self.prompt_format, "chat": self.chat, "n": self.n if stage == "responses" else None,
            "temperature": self.temperature, "top_p": self.top_p,
            "max_new_tokens": getattr(self, f"max_new_tokens_{stage}"), "num_fewshot": self.num_fewshot,
            "categories": tuple(self.categories) if self.categories else None,
            "difficulties": tuple(self.difficulties) if self.difficulties else None, "seed": self.seed,
        }  # fmt: skip
        chosen.update((key, value) for key, value in run.items() if value is not None)
        return StageSettings.for_stage(stage, self.preset, **chosen)


@dataclass
class ExecutionOptions:
    """Sandbox limits of the execution filter and of evaluation, and where the filter runs.

    Attributes:
        timeout: wall-clock seconds per sample (StarCoder2-Instruct's execution filter: 4).
        memory: address-space cap per sample process, in MB.
        run_as_main: run each sample as __main__, so its `if __name__ == "__main__":` block runs before the tests; by
            default it runs under another name, as HumanEval's harness runs it (a block that calls sys.exit(main())
            or reads input() would otherwise fail a correct program).
        workers: sandbox helpers running in parallel (on each node with the ray executor).
        isolation: auto (strongest available), bwrap, namespaces, or rlimits (unsafe; needs allow_unsafe).
        allow_unsafe: permit running generated code with rlimits only (no network/PID/filesystem isolation).
        executor: where the execution filter runs: local (this machine's sandbox pool), or ray (batches of rows go
            to one sandbox executor per node of a running Ray cluster; generated code runs in each node's sandbox
            helpers, never in a Ray worker). Needs the ray extra: pip install 'lightning-selfalign[ray]'.
            Evaluation runs locally either way.
        ray_address: the Ray cluster for the ray executor (default: auto, the cluster this machine belongs to).
        policy: refuse, without running it, a sample whose code or tests reach for what no solution needs (frames,
            gc, tracing, ctypes, builtins, signal handlers, patched modules, an always-equal __eq__; verdict
            policy): such code can forge its verdict from inside, and a model trained on what passes would learn
            it. The cost: programs that really use signal or ctypes are kept out of the data.
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

    def limits(self) -> Limits:
        """The per-sample limits the sandbox enforces."""
        return Limits(timeout_s=self.timeout, memory_mb=self.memory, run_as_main=self.run_as_main, policy=self.policy)

    def problems(self, prefix: str = "--") -> list[str]:
        """Every invalid execution setting, named by its flag (``prefix`` + field name)."""
        checks = [
            (self.timeout > 0, f"{prefix}timeout must be > 0 seconds, got {self.timeout}"),
            (self.memory > 0, f"{prefix}memory must be > 0 MB, got {self.memory}"),
            (self.workers >= 1, f"{prefix}workers must be >= 1, got {self.workers}"),
            (self.executor in ("local", "ray"), f"{prefix}executor must be local or ray, got {self.executor!r}"),
            (self.executor != "ray" or importlib.util.find_spec("ray") is not None,
             f"{prefix}executor ray needs ray, which is not installed: pip install 'lightning-selfalign[ray]'"),
            (self.ray_address is None or self.executor == "ray",
             f"{prefix}ray_address is for the ray executor: add {prefix}executor ray"),
        ]  # fmt: skip
        return [message for ok, message in checks if not ok]


@dataclass(frozen=True)
class EvaluationSampling:
    """How evaluation prompts each task and samples its answers; everything but ``n`` goes into the samples'
    fingerprint.

    Attributes:
        n: samples per task (1 with greedy decoding for pass@1; e.g. 20 with temperature 0.2 for pass@10).
        temperature: sampling temperature; 0 is greedy.
        top_p: nucleus sampling mass.
        max_new_tokens: longest completion.
        chat: instruct model: the task goes in as an instruction through the model's chat template and the code of
            the answer is kept; without it (base model) the prompt is continued up to the next top-level
            def/class/if/print/#.
        response_prefix: in chat mode, text the answer starts with, '{prompt}' standing for the task's prompt
            (default: the StarCoder2-Instruct evaluation's newline, ```python fence and the prompt, so the model
            writes the body); needs the tokenizer locally. '' sends plain chat messages and takes the first
            ```python block of the answer.
        seed: base of every sample's seed (each derives from it, the task id and the sample index).
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    chat: bool = False
    response_prefix: str = CHAT_RESPONSE_PREFIX
    seed: int = 0

    def problems(self) -> list[str]:
        """Every invalid sampling setting, named by its flag."""
        found = []
        if self.n < 1:
            found.append(f"--n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature <= 0:
            found.append(f"--n {self.n} with greedy decoding gives {self.n} identical samples; add --temperature 0.2")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            found.append("--temperature must be >= 0, --top_p in (0, 1], --max_new_tokens >= 1")
        return found


def from_flags(cls: type[T], flags: dict[str, Any]) -> T:
    """``cls`` built from a command's flags of the same names (its ``locals()`` before anything else is assigned, as
    Lightning's ``save_hyperparameters`` reads them); a flag left None takes the field's default."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in flags.items() if name in names and value is not None})


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` of ``cls`` and of the classes it extends."""
    parsed = (docstring_parser.parse(klass.__dict__.get("__doc__") or "") for klass in reversed(cls.__mro__))
    return {param.arg_name: " ".join(param.description.split()) for doc in parsed for param in doc.params}


def document_flags(*types: type) -> Callable[[F], F]:
    """Give each flag of the decorated command that its docstring's ``Args:`` (its last section) leaves out the
    description of the field of the same name in ``types``: one text for ``selfalign X --help`` and the nested
    options."""

    def decorate(command: F) -> F:
        documented = {param.arg_name for param in docstring_parser.parse(command.__doc__).params}
        docs = {name: text for cls in types for name, text in field_docs(cls).items()}
        flags = inspect.signature(command).parameters
        lines = [f"        {name}: {docs[name]}" for name in flags if name in docs and name not in documented]
        command.__doc__ = command.__doc__.rstrip() + "\n" + "\n".join(lines) + "\n    "
        undocumented = set(flags) - {param.arg_name for param in docstring_parser.parse(command.__doc__).params}
        assert not undocumented, f"{command.__name__}: flags without a description: {sorted(undocumented)}"
        return command

    return decorate
