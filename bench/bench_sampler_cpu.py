"""The hf engine's per-row sampler on a CPU, side by side in one run: the first version (one ``torch.Generator``
per row, a Python loop of ``multinomial`` calls; the named baseline, kept here only) against the hashed
inverse-CDF sampler the engine uses now, on the code-world base model and the responses stage's own prompts.

Both runs decode the same batch; their samples differ, so they are compared by wall time per decoding step (the
batch's longest completion), medians of --repeats, alternating the two.

    python bench/bench_sampler_cpu.py --instructions 43 --n 3 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch

from lightning_selfalign.engines import Sampling, hf
from lightning_selfalign.stages import StageSettings, make_samples
from lightning_selfalign.toyworld.world import build_world


class GeneratorPerRowSampler(hf.LogitsProcessor):
    """The baseline: the engine's first sampler, one seeded generator per batch row."""

    def __init__(self, seeds: Sequence[int], sampling: Sampling, device: torch.device, prompt_width: int) -> None:
        self.sampling = sampling
        self.generators = [torch.Generator(device=device).manual_seed(int(seed) % 2**63) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.sampling.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= self.sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        picks = [torch.multinomial(row, 1, generator=gen) for row, gen in zip(sorted_probs, self.generators)]
        chosen = order.gather(1, torch.cat(picks).view(-1, 1)).view(-1)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen.view(-1, 1), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/toyworld-base")
    parser.add_argument("--instructions", type=int, default=43, help="seed-pool tasks asked for, n samples each")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tasks = [task for task, _ in build_world().seed_pool[: args.instructions]]
    settings = StageSettings(n=args.n, prompt_format="selfalign-v1", num_fewshot=0)
    rows = [{"id": task.name, "instruction": f"Write a Python function `{task.signature()}`. {task.description()}"}
            for task in tasks]  # fmt: skip
    requests = [s.request for row in rows for s in make_samples("responses", row, range(args.n), settings)]
    engine = hf.HFEngine(args.model, batch_size=len(requests))
    sampling = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens)
    samplers = {"generator_per_row": GeneratorPerRowSampler, "hashed_inverse_cdf": hf.PerRowSampler}
    per_step: dict[str, list[float]] = {name: [] for name in samplers}
    engine.generate(requests[:4], Sampling(temperature=0.7, top_p=1.0, max_new_tokens=8))  # warm-up
    for _ in range(args.repeats):
        for name, sampler in samplers.items():
            hf.PerRowSampler = sampler  # the engine builds its logits processor from this name
            started = time.perf_counter()
            completions = engine.generate(requests, sampling)
            steps = max(c.num_tokens for c in completions)
            per_step[name].append((time.perf_counter() - started) / steps)
    hf.PerRowSampler = samplers["hashed_inverse_cdf"]
    medians = {name: statistics.median(times) for name, times in per_step.items()}
    print(json.dumps({
        "batch": len(requests), "threads": torch.get_num_threads(),
        **{f"{name}_ms_per_step": round(1000 * value, 2) for name, value in medians.items()},
        "speedup": round(medians["generator_per_row"] / medians["hashed_inverse_cdf"], 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
