"""Generation backends behind one small interface: a list of requests in, one completion per request out.

- ``hf``: transformers ``generate`` in this process, batched (the CPU default);
- ``openai``: any OpenAI-compatible server (vLLM serve, SGLang, llama.cpp server, :mod:`lightning_selfalign.serve`);
- ``vllm``: an in-memory ``vllm.LLM`` with tensor parallelism (the only module that imports vllm).

Every request carries its own sampling seed, derived by the stage runner from the output row's id, and
every engine honours it per request (hf: a hash of the row's seed and the step; openai: the ``seed`` field; vLLM:
``SamplingParams(seed=...)``), so a sample does not depend on which batch, shard or rerun produced it.
Completion text never includes the stop string, whichever engine made it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lightning_selfalign.errors import UserError

ENGINES = ("hf", "vllm", "openai")
EngineName = Literal["hf", "vllm", "openai"]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by one engine call; ``temperature == 0`` means greedy."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512


@dataclass(frozen=True)
class Request:
    """One prompt to complete: exactly one of ``text`` (completion mode) and ``messages`` (chat mode)."""

    text: str | None
    messages: list[dict] | None
    stop: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def from_prompt(cls, prompt: Any, seed: int) -> Request:
        """From a :class:`lightning_selfalign.prompts.Prompt` and the sample's seed."""
        return cls(text=prompt.text, messages=prompt.messages, stop=tuple(prompt.stop), seed=seed)


@dataclass(frozen=True)
class Completion:
    """Generated text (stop string removed), why generation ended (``stop`` | ``length``), tokens generated, and
    the prompt's length in tokens (0 where the backend does not say)."""

    text: str
    finish_reason: str
    num_tokens: int
    prompt_tokens: int = 0


class Engine(Protocol):
    """What the stage runner needs from a backend."""

    name: str
    model: str
    default_batch_size: int
    counters: dict[str, int]

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Completion]:
        """One completion per request, in request order."""
        ...

    def close(self) -> None:
        """Free the model / connections."""
        ...


@dataclass
class EngineOptions:
    """Backend settings; each engine reads the ones it knows.

    Attributes:
        base_url: openai: the server's URL, e.g. http://127.0.0.1:8000/v1.
        api_key: openai: the server's key (default: $OPENAI_API_KEY, else a placeholder local servers accept).
        concurrency: openai: most requests in flight at once.
        request_timeout: openai: seconds before one request is abandoned and retried.
        max_retries: openai: retries per request on connection errors, timeouts, 429 and 5xx, with exponential
            backoff.
        tensor_parallel_size: vllm: GPUs one model is split over.
        dtype: hf, vllm: weights dtype; auto takes the checkpoint's.
        gpu_memory_utilization: vllm: fraction of GPU memory the engine may take.
        batch_size: prompts per engine call (hf: one padded batch; default 16 hf, 4 x concurrency openai, 2048
            vllm); output is written after each call.
        vllm_kwargs: vllm: more keyword arguments for vllm.LLM, e.g. '{max_model_len: 8192, enforce_eager: true}'.
    """

    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 32
    request_timeout: float = 600.0
    max_retries: int = 5
    tensor_parallel_size: int = 1
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gpu_memory_utilization: float = 0.9
    batch_size: int | None = None
    vllm_kwargs: dict[str, Any] | None = None


class LazyEngine:
    """An engine made by ``load`` on first :meth:`get` (a stage with nothing to do never loads the model) and
    reused until :meth:`close`; a ``with`` block closes it."""

    def __init__(self, load: Callable[[], Engine]) -> None:
        self._load, self._engine = load, None

    def get(self) -> Engine:
        if self._engine is None:
            self._engine = self._load()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> LazyEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def merge_system_turn(messages: list[dict]) -> list[dict]:
    """Fold a leading system turn into the first user turn, for chat templates without a system role
    (StarCoder2-Instruct's among them)."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0].get("role") == "user":
        rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def prompt_token_ids(tokenizer: Any, request: Request) -> list[int]:
    """The exact token ids a local engine (hf, vLLM) feeds the model: the text as the tokenizer encodes it, or
    the messages through the tokenizer's chat template (system turn folded in if the template has no such role)."""
    if request.messages is None:
        return tokenizer(request.text)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("--chat needs a chat template and this model's tokenizer has none; drop --chat")
    try:
        text = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # Jinja raises its own types; a template without a system role is the usual cause
        text = tokenizer.apply_chat_template(
            merge_system_turn(request.messages), add_generation_prompt=True, tokenize=False
        )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def load_engine(name: str, model: str, options: EngineOptions | None = None) -> Engine:
    """Build the backend ``name`` (``hf`` | ``vllm`` | ``openai``) for ``model``."""
    options = options or EngineOptions()
    if name == "hf":
        from lightning_selfalign.engines.hf import HFEngine

        return HFEngine(model, dtype=options.dtype, batch_size=options.batch_size or 16)
    if name == "openai":
        from lightning_selfalign.engines.openai import OpenAIEngine

        if not options.base_url:
            raise UserError("--engine openai needs --base_url, e.g. http://127.0.0.1:8000/v1")
        return OpenAIEngine(
            model,
            base_url=options.base_url,
            api_key=options.api_key,
            concurrency=options.concurrency,
            request_timeout=options.request_timeout,
            max_retries=options.max_retries,
        )
    if name == "vllm":
        from lightning_selfalign.engines.vllm import VLLMEngine

        return VLLMEngine(
            model,
            tensor_parallel_size=options.tensor_parallel_size,
            dtype=options.dtype,
            gpu_memory_utilization=options.gpu_memory_utilization,
            **(options.vllm_kwargs or {}),
        )
    raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")


__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineName",
    "EngineOptions",
    "LazyEngine",
    "Request",
    "Sampling",
    "cut_at_stop",
    "load_engine",
    "merge_system_turn",
    "prompt_token_ids",
]
