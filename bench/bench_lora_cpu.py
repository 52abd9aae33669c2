"""LoRA against full fine-tuning on CPU: real tokens per second and peak process memory, the same `selfalign fit`
run (packed rows of the bundled stdlib pairs, AdamW, fp32) on the same small StarCoder2 model, with and without
``--model.peft lora``. Each run is its own subprocess (so peak RSS is that run's), the arms alternate, and medians
over the rounds are reported. Run from the repository root:

    python bench/bench_lora_cpu.py --rounds 3 --hidden_size 512 --layers 6
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = {"full": [], "lora": ["--model.peft", "lora", "--model.lora_rank", "16", "--model.lora_alpha", "32"]}


def one_run(model_dir: str, workdir: str, arm: str, steps: int, warmup: int, batch_size: int, max_length: int) -> None:
    """Child process: train, print the clock's result and the peak RSS as one JSON line."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_train_cpu import DATA, ClockCallback, StepClock

    from lightning_selfalign.model import SelfAlignLM
    from lightning_selfalign.training_cli import run_lightning_cli

    clock = StepClock(warmup)
    SelfAlignLM.configure_callbacks = lambda self: [ClockCallback(clock)]
    cli = run_lightning_cli([
        "fit", "--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--model.model_name_or_path", model_dir,
        "--model.optimizer", "adamw", "--model.learning_rate", "1e-4", *ARMS[arm],
        "--data.train_files", str(DATA), "--data.val_fraction", "0", "--data.packing", "true",
        "--data.batch_size", str(batch_size), "--data.max_length", str(max_length),
        "--data.cache_dir", f"{workdir}/cache-{arm}", "--trainer.max_steps", str(steps + warmup),
        "--trainer.accumulate_grad_batches", "1", "--trainer.limit_val_batches", "0",
        "--trainer.val_check_interval", "null", "--trainer.default_root_dir", f"{workdir}/{arm}",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_model_summary", "false",
    ])  # fmt: skip
    trainable = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in cli.model.parameters())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**clock.result(), "peak_rss_mb": peak_mb, "train_state_mb": train_state_mb(cli),
                      "trainable": trainable, "parameters": total}))  # fmt: skip


def train_state_mb(cli) -> float:
    """Weights, gradients and optimizer state held as tensors at the end of training, in MB."""
    import torch

    tensors = [p for p in cli.model.parameters()] + [p.grad for p in cli.model.parameters() if p.grad is not None]
    for optimizer in cli.trainer.optimizers:
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--hidden_size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "ARM"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_run(args.child[0], args.workdir, args.child[1], args.steps, args.warmup, args.batch_size, args.max_length)
        return

    from lightning_selfalign.tiny import build_tiny_model

    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(f"{tmp}/model", hidden_size=args.hidden_size,
                                     intermediate_size=4 * args.hidden_size, num_layers=args.layers,
                                     num_heads=8, num_kv_heads=4)  # fmt: skip
        for _ in range(args.rounds):
            for arm in ARMS:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    str(model_dir),
                    arm,
                    "--workdir",
                    tmp,
                    *(f"--{k}={getattr(args, k)}" for k in ("steps", "warmup", "batch_size", "max_length")),
                ]
                run = subprocess.run(command, capture_output=True, text=True, check=True)
                results[arm].append(json.loads(run.stdout.strip().splitlines()[-1]))
                print(arm, results[arm][-1], flush=True)

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in results[arm])

    summary = {
        "parameters": results["full"][0]["parameters"],
        "lora_trainable": results["lora"][0]["trainable"],
        "full_real_tokens_per_s": median("full", "real_tokens_per_s"),
        "lora_real_tokens_per_s": median("lora", "real_tokens_per_s"),
        "lora_speed_ratio": median("lora", "real_tokens_per_s") / median("full", "real_tokens_per_s"),
        "full_peak_rss_mb": median("full", "peak_rss_mb"),
        "lora_peak_rss_mb": median("lora", "peak_rss_mb"),
        "full_train_state_mb": median("full", "train_state_mb"),
        "lora_train_state_mb": median("lora", "train_state_mb"),
        "rounds": args.rounds,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
