"""Any OpenAI-compatible server (vLLM serve, SGLang, llama.cpp server, ``python -m lightning_selfalign.serve``).

Chat requests go to ``/v1/chat/completions`` (the server applies the model's chat template), text requests
to ``/v1/completions``. One HTTP request per sample, each with its own ``seed``, at most ``concurrency`` in
flight. Connection errors, timeouts, 429 and 5xx are retried with exponential backoff (with jitter, capped);
any other refusal (4xx) is a mistake in the request or the flags and fails at once. When retries run out the
stage stops with one line naming the server and the fix; rows written so far stay, and a rerun resumes.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from typing import Any

import openai

from lightning_selfalign.engines import Completion, Request, Sampling, cut_at_stop, merge_system_turn
from lightning_selfalign.errors import UserError

RETRYABLE = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)


class OpenAIEngine:
    """Async client with bounded concurrency, per-request timeout and retries with backoff."""

    name = "openai"

    def __init__(
        self,
        model: str | None,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 32,
        request_timeout: float = 600.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise UserError(f"--concurrency must be at least 1, got {concurrency}")
        self.base_url = base_url
        # Local servers ignore the key, but the client insists on having one.
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.default_batch_size = 4 * concurrency
        self.counters = {"requests": 0, "retries": 0}
        # Set once the server refuses a system turn (chat templates without one, e.g. StarCoder2-Instruct's).
        self.fold_system_turn = False
        # Asking for the model list first makes a down server or a wrong URL fail before any work starts.
        served = asyncio.run(self._served_model())
        self.model = model or served

    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.request_timeout, max_retries=0
        )

    async def _served_model(self) -> str:
        """The server's first model, when --model is not given."""
        async with self._client() as client:
            try:
                page = await self._with_retries(client.models.list)
            except openai.BadRequestError as exc:
                raise self._refused(exc) from None
        if not page.data:
            raise UserError(f"{self.base_url} serves no model; pass --model")
        return page.data[0].id

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Completion]:
        """Completions in request order (requests run concurrently, at most ``concurrency`` at a time)."""
        return asyncio.run(self._generate_all(requests, sampling))

    async def _generate_all(self, requests: Sequence[Request], sampling: Sampling) -> list[Completion]:
        slots = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
            return list(await asyncio.gather(*(self._complete(client, slots, r, sampling) for r in requests)))

    async def _complete(
        self, client: openai.AsyncOpenAI, slots: asyncio.Semaphore, request: Request, sampling: Sampling
    ) -> Completion:
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": request.seed,
            "n": 1,
        }
        if request.stop:
            common["stop"] = list(request.stop)

        async def call() -> Any:
            async with slots:
                self.counters["requests"] += 1
                if request.messages is None:
                    return await client.completions.create(prompt=request.text, **common)
                messages = merge_system_turn(request.messages) if self.fold_system_turn else request.messages
                return await client.chat.completions.create(messages=messages, **common)

        try:
            response = await self._with_retries(call)
        except openai.BadRequestError as exc:
            if not _has_system_turn(request):
                raise self._refused(exc) from None
            self.fold_system_turn = True
            try:
                response = await self._with_retries(call)
            except openai.BadRequestError as again:
                raise self._refused(again) from None
        choice = response.choices[0]
        text = (choice.message.content if request.messages is not None else choice.text) or ""
        text, _ = cut_at_stop(text, request.stop)
        usage = response.usage
        return Completion(
            text=text,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            num_tokens=(usage.completion_tokens if usage else 0) or 0,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        )

    async def _with_retries(self, call: Any) -> Any:
        """``call()``, retried on transient failures; 400 propagates as is, other refusals become UserError."""
        for attempt in range(self.max_retries + 1):
            try:
                return await call()
            except RETRYABLE as exc:
                if attempt == self.max_retries:
                    raise UserError(
                        f"the OpenAI-compatible server at {self.base_url} failed {attempt + 1} times "
                        f"(last: {_describe(exc)}); start it or fix --base_url, then rerun to resume"
                    ) from None
                self.counters["retries"] += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            except openai.BadRequestError:
                raise  # the caller may retry it once without a system turn
            except openai.APIStatusError as exc:
                raise self._refused(exc) from None
        raise AssertionError("unreachable: the loop returns or raises")

    def _refused(self, exc: openai.APIStatusError) -> UserError:
        return UserError(
            f"the server at {self.base_url} refused the request ({_describe(exc)}); "
            "check --model, --chat and the sampling flags"
        )

    def close(self) -> None:
        """Nothing to free: each call opens and closes its own connection pool."""


def _has_system_turn(request: Request) -> bool:
    return bool(request.messages) and request.messages[0].get("role") == "system"


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out; raise --request_timeout if generations are long"
    if isinstance(exc, openai.APIStatusError):
        message = str(exc.message).removeprefix(f"Error code: {exc.status_code} - ")
        return f"HTTP {exc.status_code}: {' '.join(message.split())[:200]}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
