"""Generation engines on the tiny model, CPU, side by side in one run (medians of --repeats).

1. hf engine (per-row seeded sampler + tail-decoding stop check) vs plain ``model.generate(do_sample=True,
   stop_strings=...)`` on the same padded batch: what per-row reproducibility costs.
2. openai engine against ``python -m lightning_selfalign.serve`` at concurrency 1 vs --concurrency: what
   bounded concurrency buys when the server batches.

    python bench/bench_generate.py --prompts 32 --max_new_tokens 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def requests_for(count: int):
    from lightning_selfalign.engines import Request

    return [Request(text=f"def f{k}(x):\n    '''Return x plus {k}.'''\n", messages=None, stop=("[end]",), seed=k)
            for k in range(count)]  # fmt: skip


def baseline_generate(engine, requests, sampling) -> None:
    """transformers' own sampler and stop strings on the same left-padded batch."""
    import torch

    prompts = [engine.tokenizer(r.text)["input_ids"] for r in requests]
    width = max(map(len, prompts))
    ids = torch.tensor([[engine.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        engine.lm.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=sampling.max_new_tokens,
            stop_strings=["[end]"],
            tokenizer=engine.tokenizer,
            pad_token_id=engine.pad_id,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine
    from lightning_selfalign.tiny import build_tiny_model

    model = str(build_tiny_model(str(Path(tempfile.mkdtemp()) / "tiny")))
    # min length = max length in the baseline too, so both generate exactly the same number of tokens.
    sampling = Sampling(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens)
    requests = requests_for(args.prompts)
    tokens = args.prompts * args.max_new_tokens
    hf = load_engine("hf", model, EngineOptions(batch_size=args.prompts))
    hf.generate(requests[:2], sampling)
    results = {
        "hf_baseline_s": median_time(lambda: baseline_generate(hf, requests, sampling), args.repeats),
        "hf_engine_s": median_time(lambda: hf.generate(requests, sampling), args.repeats),
    }
    server = subprocess.Popen([sys.executable, "-m", "lightning_selfalign.serve", f"--model={model}", "--port=0",
                               f"--batch_size={args.concurrency}"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = server.stdout.readline().strip().rsplit(" ", 1)[1]
        for concurrency in (1, args.concurrency):
            engine = load_engine("openai", None, EngineOptions(base_url=url, concurrency=concurrency))
            engine.generate(requests[:2], sampling)
            results[f"openai_c{concurrency}_s"] = median_time(lambda: engine.generate(requests, sampling), args.repeats)
    finally:
        server.kill()
    report = {key: round(value, 3) for key, value in results.items()}
    report.update({key.replace("_s", "_tok_per_s"): round(tokens / value, 1) for key, value in results.items()})
    report["hf_engine_vs_baseline"] = round(results["hf_baseline_s"] / results["hf_engine_s"], 2)
    report[f"openai_c{args.concurrency}_vs_c1"] = round(
        results["openai_c1_s"] / results[f"openai_c{args.concurrency}_s"], 2
    )
    print(json.dumps({"prompts": args.prompts, "max_new_tokens": args.max_new_tokens, **report}, indent=2))


if __name__ == "__main__":
    main()
