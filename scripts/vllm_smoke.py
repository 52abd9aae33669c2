"""Run the vLLM engine against the tiny model on one GPU: determinism, batch independence, one real stage, speed.

    python scripts/vllm_smoke.py                      # builds the tiny model into a temp folder
    python scripts/vllm_smoke.py --model DIR --rows 256 --tensor_parallel_size 2

Prints one JSON object (also written to --report if given); exits non-zero when a check fails. The tiny model
is built with head size 64 (hidden 256, 4 heads), a size every vLLM attention backend supports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def build_model(folder: Path) -> str:
    from lightning_selfalign.tiny import build_tiny_model

    return str(build_tiny_model(str(folder / "tiny"), hidden_size=256, intermediate_size=1024))


def requests_for(rows: int):
    from lightning_selfalign.engines import Request

    return [Request(text=f"def f{k}(x):\n    '''Return x plus {k}.'''\n", messages=None, stop=("\n\n\n",), seed=k)
            for k in range(rows)]  # fmt: skip


def timed(engine, requests, sampling) -> tuple[list, float]:
    start = time.perf_counter()
    completions = engine.generate(requests, sampling)
    return completions, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: build the tiny model)")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--tensor_parallel_size", type=int, default=1)
    parser.add_argument("--hf_baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--report", help="also write the JSON report here")
    args = parser.parse_args(argv)

    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine
    from lightning_selfalign.jsonl import read_jsonl
    from lightning_selfalign.stages import StageSettings, run_stage

    workdir = Path(tempfile.mkdtemp(prefix="vllm-smoke-"))
    model = args.model or build_model(workdir)
    extra = {"enforce_eager": True, "max_model_len": 2048}
    options = EngineOptions(
        tensor_parallel_size=args.tensor_parallel_size, dtype="bfloat16", gpu_memory_utilization=0.5, vllm_kwargs=extra
    )
    engine = load_engine("vllm", model, options)
    sampling = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens)
    requests = requests_for(args.rows)
    engine.generate(requests[:4], sampling)  # warm-up
    first, seconds = timed(engine, requests, sampling)
    again, _ = timed(engine, requests[::-1], sampling)
    alone = [engine.generate([request], sampling)[0] for request in requests[:3]]
    tokens = sum(c.num_tokens for c in first)
    report: dict = {
        "model": model,
        "rows": args.rows,
        "vllm_seconds": round(seconds, 3),
        "vllm_tokens": tokens,
        "vllm_tokens_per_s": round(tokens / seconds, 1),
        "finish_reasons": sorted({c.finish_reason for c in first}),
        "same_after_reordering": first == again[::-1],
        "same_alone_as_in_a_batch": first[:3] == alone,
    }
    seeds = workdir / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{k}", "seed": r.text}) + "\n" for k, r in enumerate(requests[:32])))
    settings = StageSettings.for_stage("concepts", max_new_tokens=32, num_fewshot=1, progress=False)
    stats = run_stage("concepts", read_jsonl(seeds), workdir / "concepts.jsonl", engine, settings)
    report["stage"] = {key: stats[key] for key in ("samples", "kept", "dropped", "tokens_per_s")}
    engine.close()
    if args.hf_baseline:
        hf = load_engine("hf", model, EngineOptions(dtype="bfloat16", batch_size=args.rows))
        hf.generate(requests[:4], sampling)
        baseline, hf_seconds = timed(hf, requests, sampling)
        hf_tokens = sum(c.num_tokens for c in baseline)
        report.update(hf_seconds=round(hf_seconds, 3), hf_tokens_per_s=round(hf_tokens / hf_seconds, 1))
        report["speedup_tokens_per_s"] = round(report["vllm_tokens_per_s"] / report["hf_tokens_per_s"], 2)
    ok = report["same_after_reordering"] and report["same_alone_as_in_a_batch"] and stats["samples"] == 32
    report["ok"] = bool(ok)
    print(json.dumps(report, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
