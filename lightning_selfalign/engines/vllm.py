"""vLLM in this process (``vllm.LLM``), tensor parallel across the visible GPUs. The only module importing vllm.

Prompts are rendered to token ids with the model's own tokenizer exactly as the hf engine renders them
(chat template included), so both engines see the same tokens; each request gets
``SamplingParams(seed=...)`` from its row, so a sample does not depend on the batch it ran in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_selfalign.engines import Completion, Request, Sampling, cut_at_stop, prompt_token_ids
from lightning_selfalign.errors import UserError


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise UserError(
            "--engine vllm needs vLLM on a CUDA machine: pip install 'lightning-selfalign[vllm]' "
            "(or use --engine hf, or --engine openai against a running server)"
        ) from None
    return vllm


class VLLMEngine:
    """One ``vllm.LLM``; the whole request list goes to it at once and vLLM schedules the batches."""

    name = "vllm"
    default_batch_size = 2048

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        **llm_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        self.model = model
        self.counters: dict[str, int] = {}
        self._sampling_params = vllm.SamplingParams
        self.llm = vllm.LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> list[Completion]:
        """Completions in request order."""
        prompts = [{"prompt_token_ids": prompt_token_ids(self.tokenizer, request)} for request in requests]
        params = [
            self._sampling_params(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_new_tokens,
                stop=list(request.stop) or None,
                seed=request.seed,
            )
            for request in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [self._completion(output, request) for output, request in zip(outputs, requests)]

    @staticmethod
    def _completion(output: Any, request: Request) -> Completion:
        sample = output.outputs[0]
        text, _ = cut_at_stop(sample.text, request.stop)
        reason = "length" if sample.finish_reason == "length" else "stop"
        tokens, prompt_tokens = len(sample.token_ids), len(output.prompt_token_ids or [])
        return Completion(text=text, finish_reason=reason, num_tokens=tokens, prompt_tokens=prompt_tokens)

    def close(self) -> None:
        del self.llm
