"""The hf engine's decoding on a CPU, side by side in one run: transformers' ``generate`` with the engine's
hashed per-row sampler as a logits processor (how the engine decoded until 2026-12-08; the named baseline, kept
here only) against the engine's own loop, which drops a row from the batch and the KV cache as soon as it ends.
Both decode the same batches of the responses stage's own prompts (seed-pool tasks, n samples each) on the
code-world base model, with the same seeds; the script checks that they write the same completions and reports
wall time per completion, medians of --repeats, alternating the two.

    python bench/bench_decode_cpu.py --instructions 64 --n 6 --batch 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from lightning_selfalign.engines import Sampling, hf
from lightning_selfalign.stages import StageSettings, make_samples
from lightning_selfalign.toyworld.world import build_world


class GenerateSampler(LogitsProcessor):
    """The engine's sampler as ``generate`` saw it: a one-hot (0 / -inf) choice, the step read off the width."""

    def __init__(self, sampler: hf.PerRowSampler, prompt_width: int, rows: int) -> None:
        self.sampler, self.prompt_width, self.rows = sampler, prompt_width, torch.arange(rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = self.sampler.draw(scores, input_ids.shape[1] - self.prompt_width, self.rows)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen.view(-1, 1), 0.0)


class GenerateStop(StoppingCriteria):
    def __init__(self, stop: hf.StopOnText, prompt_width: int) -> None:
        self.stop, self.prompt_width = stop, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        return torch.tensor(self.stop(input_ids[:, self.prompt_width :].tolist()))


def generate_batch(engine: hf.HFEngine, prompts, seeds, stops, sampling) -> list[list[int]]:  # noqa: ANN001
    """The baseline: the engine's ``_generate_batch`` as it was, through ``generate``."""
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[engine.pad_id] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    config = GenerationConfig(do_sample=False, max_new_tokens=sampling.max_new_tokens, eos_token_id=engine.eos_id,
                              pad_token_id=engine.pad_id)  # fmt: skip
    sampler = hf.PerRowSampler(seeds, sampling, engine.device)
    with torch.inference_mode():
        output = engine.lm.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
            logits_processor=LogitsProcessorList([GenerateSampler(sampler, width, len(prompts))]),
            stopping_criteria=StoppingCriteriaList([GenerateStop(hf.StopOnText(engine.tokenizer, stops), width)]),
        )  # fmt: skip
    return output[:, width:].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/toyworld-base")
    parser.add_argument("--instructions", type=int, default=64, help="seed-pool tasks asked for, n samples each")
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max_new_tokens", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tasks = [task for task, _ in build_world().seed_pool[: args.instructions]]
    settings = StageSettings(n=args.n, prompt_format="selfalign-v1", num_fewshot=0)
    rows = [{"id": task.name, "instruction": f"Write a Python function `{task.signature()}`. {task.description()}"}
            for task in tasks]  # fmt: skip
    requests = [s.request for row in rows for s in make_samples("responses", row, range(args.n), settings)]
    engine = hf.HFEngine(args.model, batch_size=args.batch)
    sampling = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens)
    loop = engine._generate_batch
    decoders = {"transformers_generate": lambda *a: generate_batch(engine, *a), "drop_ended_rows": loop}
    seconds: dict[str, list[float]] = {name: [] for name in decoders}
    texts: dict[str, list[str]] = {}
    engine.generate(requests[:4], Sampling(temperature=0.7, top_p=1.0, max_new_tokens=8))  # warm-up
    for _ in range(args.repeats):
        for name, decode in decoders.items():
            engine._generate_batch = decode  # type: ignore[method-assign]
            started = time.perf_counter()
            completions = engine.generate(requests, sampling)
            seconds[name].append(time.perf_counter() - started)
            texts[name] = [c.text for c in completions]
    engine._generate_batch = loop  # type: ignore[method-assign]
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    same = sum(a == b for a, b in zip(texts["transformers_generate"], texts["drop_ended_rows"]))
    print(json.dumps({
        "completions": len(requests), "batch": args.batch, "threads": torch.get_num_threads(),
        "same_text": f"{same} of {len(requests)}",
        "tokens": sum(len(engine.tokenizer(t)["input_ids"]) for t in texts["drop_ended_rows"]),
        **{f"{name}_s": round(value, 2) for name, value in medians.items()},
        **{f"{name}_ms_per_completion": round(1000 * value / len(requests), 2) for name, value in medians.items()},
        "speedup": round(medians["transformers_generate"] / medians["drop_ended_rows"], 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
