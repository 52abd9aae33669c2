"""transformers ``generate`` in this process: batched, left-padded, one sampling seed per row.

``generate``'s own sampler draws every row of a batch from one global generator, so a sample would change
with the batch it happens to land in (and a resumed run would not reproduce an uninterrupted one). Here a
logits processor draws each row's next token by inverse CDF from a uniform that hashes the row's seed (from the
request) with the step, for the whole batch at once, and hands ``generate`` a one-hot choice, which its greedy
step then takes. Rows are independent of batching, ordering and sharding, up to float noise from padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from lightning_selfalign.engines import Completion, Request, Sampling, cut_at_stop, prompt_token_ids
from lightning_selfalign.errors import UserError

_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


_MASK32 = 0xFFFFFFFF


def _times32(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x * factor mod 2**32`` for int64 tensors of 32-bit values, in 16-bit halves so no product overflows."""
    low = x * (factor & 0xFFFF)
    high = ((x * (factor >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser, elementwise on int64 tensors of 32-bit values."""
    x = x ^ (x >> 16)
    x = _times32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _times32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def row_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One number in (0, 1) per row, a function of the row's key and the step alone (float64)."""
    hashed = mix32(mix32((keys + ((step + 1) * 0x9E3779B9 & _MASK32)) & _MASK32) ^ keys)
    return (hashed.double() + 0.5) / 2.0**32


def row_keys(seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """A 32-bit key per row from its (up to 64-bit) seed."""
    seeds = [int(seed) % 2**64 for seed in seeds]
    high = mix32(torch.tensor([seed >> 32 for seed in seeds], dtype=torch.int64, device=device))
    return mix32(torch.tensor([seed & _MASK32 for seed in seeds], dtype=torch.int64, device=device) ^ high)


class PerRowSampler(LogitsProcessor):
    """Temperature + top-p sampling by inverse CDF, with each row's uniform a hash of (its seed, the step): the
    whole batch is drawn in a few tensor operations, and a row's draw does not depend on its batch. Returns a
    one-hot (0 / -inf) choice."""

    def __init__(self, seeds: Sequence[int], sampling: Sampling, device: torch.device, prompt_width: int) -> None:
        self.sampling = sampling
        self.keys = row_keys(seeds, device)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.sampling.temperature <= 0:
            chosen = scores.argmax(dim=-1)
        else:
            probs = torch.softmax(scores.double() / self.sampling.temperature, dim=-1)
            if self.sampling.top_p < 1.0:
                # Drop a token once the mass before it already reaches top_p (the most likely token always stays),
                # as a probability floor applied in vocabulary order: the CDF below never follows a sort, so float
                # noise from padding cannot reorder near-equal tokens under a row's draw.
                ranked = probs.sort(dim=-1, descending=True).values
                kept = ((ranked.cumsum(dim=-1) - ranked) < self.sampling.top_p).sum(dim=-1, keepdim=True)
                probs = probs.masked_fill(probs < ranked.gather(1, kept - 1), 0.0)
            cdf = probs.cumsum(dim=-1)
            target = row_uniforms(self.keys, input_ids.shape[1] - self.prompt_width) * cdf[:, -1]
            chosen = torch.searchsorted(cdf, target.unsqueeze(1), right=True).clamp_(max=cdf.shape[1] - 1).view(-1)
        one_hot = torch.full_like(scores, float("-inf"))
        return one_hot.scatter_(1, chosen.view(-1, 1), 0.0)


class StopOnText(StoppingCriteria):
    """Ends a row once its recent text contains a stop string. Decoding a short tail per step is far cheaper
    than transformers' ``stop_strings`` machinery, which dominated the step time of small models."""

    def __init__(self, tokenizer: object, stops: Sequence[str], prompt_width: int, tail_tokens: int = 16) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width
        self.tail = max(tail_tokens, *(len(s) for s in self.stops)) if self.stops else tail_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stops:
            return done
        start = max(self.prompt_width, input_ids.shape[1] - self.tail)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        for row, text in enumerate(tails):
            done[row] = any(stop in text for stop in self.stops)
        return done


class HFEngine:
    """A transformers causal LM on the GPU when there is one, else the CPU."""

    name = "hf"

    def __init__(self, model: str, dtype: str = "auto", batch_size: int = 16, device: str | None = None) -> None:
        if dtype not in _DTYPES:
            raise UserError(f"--dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.model = model
        self.default_batch_size = batch_size
        self.counters: dict[str, int] = {}
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=_DTYPES[dtype]).to(self.device).eval()
        except (OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--model {model}: cannot load it with transformers ({first_line})") from None
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Completion]:
        """Completions in request order; batches of similar prompt length to keep padding low."""
        prompts = [prompt_token_ids(self.tokenizer, request) for request in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        results: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.default_batch_size):
            batch = order[start : start + self.default_batch_size]
            stops = sorted({s for i in batch for s in requests[i].stop})
            outputs = self._generate_batch(
                [prompts[i] for i in batch], [requests[i].seed for i in batch], stops, sampling
            )
            for i, generated in zip(batch, outputs):
                results[i] = self._completion(generated, requests[i].stop, sampling, len(prompts[i]))
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[list[int]], seeds: list[int], stops: list[str], sampling: Sampling
    ) -> list[list[int]]:
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        output = self.lm.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([PerRowSampler(seeds, sampling, self.device, width)]),
            stopping_criteria=StoppingCriteriaList([StopOnText(self.tokenizer, stops, width)]),
        )
        return output[:, width:].tolist()

    def _completion(
        self, generated: list[int], stop: Sequence[str], sampling: Sampling, prompt_tokens: int
    ) -> Completion:
        ends = [i for i, token in enumerate(generated) if token in (self.eos_id, self.pad_id)]
        end = ends[0] if ends else len(generated)
        text, stopped = cut_at_stop(self.tokenizer.decode(generated[:end], skip_special_tokens=True), stop)
        # Padding after a stop string looks like EOS when pad == eos; only a real EOS counts as a token.
        num_tokens = end + 1 if ends and not stopped else end
        finished = bool(ends) or stopped or num_tokens < sampling.max_new_tokens
        reason = "stop" if finished else "length"
        return Completion(text=text, finish_reason=reason, num_tokens=num_tokens, prompt_tokens=prompt_tokens)

    def close(self) -> None:
        del self.lm
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
