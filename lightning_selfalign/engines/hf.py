"""A transformers causal LM in this process: batched, left-padded, one sampling seed per row.

The engine runs its own decoding loop over the model's forward pass and KV cache (``DynamicCache``), as
``generate`` does, with two differences. Each row's next token is drawn by inverse CDF from a uniform that hashes
the row's seed (from the request) with the step, for the whole batch at once (``generate``'s sampler draws every
row from one global generator, so a sample would change with the batch it lands in, and a resumed run would not
reproduce an uninterrupted one). And a row that ends (EOS or a stop string) leaves the batch and the cache at once,
where ``generate`` keeps computing it until the longest row ends. Rows are independent of batching, ordering and
sharding, up to float noise from padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

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


class PerRowSampler:
    """Temperature + top-p sampling by inverse CDF, with each row's uniform a hash of (its seed, the step): the
    whole batch is drawn in a few tensor operations, and a row's draw does not depend on its batch."""

    def __init__(self, seeds: Sequence[int], sampling: Sampling, device: torch.device) -> None:
        self.sampling = sampling
        self.keys = row_keys(seeds, device)

    def draw(self, scores: torch.Tensor, step: int, rows: torch.Tensor) -> torch.Tensor:
        """The next token of each of ``rows`` (indices into the seeds), from their last-position logits."""
        if self.sampling.temperature <= 0:
            return scores.argmax(dim=-1)
        probs = torch.softmax(scores.double() / self.sampling.temperature, dim=-1)
        if self.sampling.top_p < 1.0:
            # Drop a token once the mass before it already reaches top_p (the most likely token always stays),
            # as a probability floor applied in vocabulary order: the CDF below never follows a sort, so float
            # noise from padding cannot reorder near-equal tokens under a row's draw.
            ranked = probs.sort(dim=-1, descending=True).values
            kept = ((ranked.cumsum(dim=-1) - ranked) < self.sampling.top_p).sum(dim=-1, keepdim=True)
            probs = probs.masked_fill(probs < ranked.gather(1, kept - 1), 0.0)
        cdf = probs.cumsum(dim=-1)
        target = row_uniforms(self.keys[rows], step) * cdf[:, -1]
        return torch.searchsorted(cdf, target.unsqueeze(1), right=True).clamp_(max=cdf.shape[1] - 1).view(-1)


class StopOnText:
    """Whether a row's recent text contains a stop string. Decoding a short tail per step is far cheaper than
    transformers' ``stop_strings`` machinery, which dominated the step time of small models."""

    def __init__(self, tokenizer: object, stops: Sequence[str], tail_tokens: int = 16) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.tail = max(tail_tokens, *(len(s) for s in self.stops)) if self.stops else tail_tokens

    def __call__(self, generated: Sequence[list[int]]) -> list[bool]:
        if not self.stops:
            return [False] * len(generated)
        tails = self.tokenizer.batch_decode([tokens[-self.tail :] for tokens in generated], skip_special_tokens=True)
        return [any(stop in text for stop in self.stops) for text in tails]


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
        # transformers 5.x renamed forward's ``past_key_values`` to ``cache``; the package supports both.
        parameters = inspect.signature(self.lm.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
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
        """Decode a left-padded batch with a KV cache, dropping each row from the batch (and the cache) once it
        ends: a step costs what the rows still running cost, not what the longest one does."""
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        positions = (mask.cumsum(dim=-1) - 1).clamp_(min=0)
        sampler, stop_on_text = PerRowSampler(seeds, sampling, self.device), StopOnText(self.tokenizer, stops)
        generated: list[list[int]] = [[] for _ in prompts]
        rows = torch.arange(len(prompts), device=self.device)  # the batch's rows still running
        cache = {self.cache_argument: DynamicCache()}
        logits = self.lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **cache).logits[:, -1]  # fmt: skip
        for step in range(sampling.max_new_tokens):
            tokens = sampler.draw(logits.float(), step, rows)
            running = rows.tolist()
            for row, token in zip(running, tokens.tolist()):
                generated[row].append(token)
            ended = (tokens == self.eos_id).tolist()
            stopped = stop_on_text([generated[row] for row in running])
            keep = [i for i, (eos, stop) in enumerate(zip(ended, stopped)) if not (eos or stop)]
            if not keep or step + 1 == sampling.max_new_tokens:
                break
            if len(keep) < len(running):
                index = torch.tensor(keep, device=self.device)
                cache[self.cache_argument].batch_select_indices(index)
                rows, tokens, mask, positions = rows[index], tokens[index], mask[index], positions[index]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            positions = positions[:, -1:] + 1
            logits = self.lm(input_ids=tokens.view(-1, 1), attention_mask=mask, position_ids=positions,
                             use_cache=True, **cache).logits[:, -1]  # fmt: skip
        return generated

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
