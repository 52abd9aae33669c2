"""CPU training throughput: `selfalign fit` (packed) against TRL's SFTTrainer (its default, unpacked), one
after the other in this process, on the same tiny StarCoder2 model, the same instruction/response pairs
(the bundled stdlib set), the same batch size and maximum length.

Measured: real (non-padding) tokens per second over the steps after a warm-up, and the fraction of
computed tokens that are real. TRL runs twice: its defaults (which on this version include gradient
checkpointing and bf16 autocast) and "matched" (both off, fp32 like ours), so the packing gain is visible
alone. Run from the repository root:

    python bench/bench_train_cpu.py --steps 12 --warmup 2 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "lightning_selfalign" / "demo" / "stdlib_sft.jsonl"


class StepClock:
    """Real and computed tokens, and wall time, from the end of step `warmup` to the end of the run."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.steps = 0
        self.start = 0.0
        self.end = 0.0
        self.real = 0
        self.computed = 0
        self._pending = (0, 0)

    def batch(self, real: int, computed: int) -> None:
        self._pending = (self._pending[0] + real, self._pending[1] + computed)

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.start = time.perf_counter()
        elif self.steps > self.warmup:
            self.real += self._pending[0]
            self.computed += self._pending[1]
            self.end = time.perf_counter()
        self._pending = (0, 0)

    def result(self) -> dict[str, float]:
        seconds = self.end - self.start
        return {
            "real_tokens_per_s": self.real / seconds,
            "real_token_fraction": self.real / self.computed,
            "measured_steps": self.steps - self.warmup,
            "seconds": seconds,
        }


class ClockCallback(pl.Callback):
    """Feeds a StepClock from `selfalign fit`'s packed batches."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.clock.batch(int(batch["num_real_tokens"]), batch["input_ids"].numel())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clock.step_done()


def run_ours(model_dir: Path, workdir: Path, batch_size: int, max_length: int, steps: int, warmup: int) -> dict:
    from lightning_selfalign.model import SelfAlignLM
    from lightning_selfalign.training_cli import run_lightning_cli

    clock = StepClock(warmup)
    original = SelfAlignLM.configure_callbacks
    SelfAlignLM.configure_callbacks = lambda self: [ClockCallback(clock)]
    try:
        run_lightning_cli([
            "fit", "--config", str(REPO / "configs" / "tiny-cpu.yaml"),
            "--model.model_name_or_path", str(model_dir),
            "--data.train_files", str(DATA), "--data.val_fraction", "0", "--data.packing", "true",
            "--data.batch_size", str(batch_size), "--data.max_length", str(max_length),
            "--data.cache_dir", str(workdir / "cache"),
            "--trainer.max_steps", str(steps + warmup), "--trainer.accumulate_grad_batches", "1",
            "--trainer.limit_val_batches", "0", "--trainer.val_check_interval", "null",
            "--trainer.default_root_dir", str(workdir / "ours"), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.callbacks", "[]", "--trainer.enable_model_summary", "false",
        ])  # fmt: skip
    finally:
        SelfAlignLM.configure_callbacks = original
    return clock.result()


def run_trl(
    model_dir: Path, workdir: Path, batch_size: int, max_length: int, steps: int, warmup: int, matched: bool = False
) -> dict:
    """TRL's SFTTrainer, unpacked. ``matched``: its default gradient checkpointing and bf16 autocast turned
    off, so it computes exactly what ours computes (fp32, no recomputation) and only packing differs."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["instruction"]}],
         "completion": [{"role": "assistant", "content": r["response"]}]}
        for r in rows
    ])  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    clock = StepClock(warmup)
    config = SFTConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=batch_size, max_length=max_length,
        max_steps=steps + warmup, learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=1000,
        use_cpu=True, dataloader_num_workers=0, seed=0,
        **({"gradient_checkpointing": False, "bf16": False} if matched else {}),
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    collator = trainer.data_collator

    def counting_collator(examples):
        batch = collator(examples)
        clock.batch(int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel(),
                    batch["input_ids"].numel())  # fmt: skip
        return batch

    trainer.data_collator = counting_collator
    trainer.train_dataset = trainer.train_dataset  # the collator is read when the dataloader is built

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done()

    trainer.add_callback(Clock())
    trainer.train()
    return clock.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the clock starts")
    parser.add_argument("--rounds", type=int, default=3, help="ours/TRL pairs; medians are reported")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    args = parser.parse_args()

    from lightning_selfalign.tiny import build_tiny_model

    torch.manual_seed(0)
    results: dict[str, list[dict]] = {"ours": [], "trl": [], "trl_matched": []}
    runs = (("ours", run_ours), ("trl", run_trl), ("trl_matched", functools.partial(run_trl, matched=True)))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = build_tiny_model(str(workdir / "tiny"))
        for _ in range(args.rounds):
            for name, run in runs:
                results[name].append(run(model_dir, workdir, args.batch_size, args.max_length, args.steps,
                                         args.warmup))  # fmt: skip
                print(name, results[name][-1], flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    summary = {
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "examples": sum(1 for _ in DATA.open()),
        "ours_real_tokens_per_s": median("ours", "real_tokens_per_s"),
        "trl_real_tokens_per_s": median("trl", "real_tokens_per_s"),
        "trl_matched_real_tokens_per_s": median("trl_matched", "real_tokens_per_s"),
        "speedup_vs_trl_default": median("ours", "real_tokens_per_s") / median("trl", "real_tokens_per_s"),
        "speedup_vs_trl_matched": median("ours", "real_tokens_per_s") / median("trl_matched", "real_tokens_per_s"),
        "ours_real_token_fraction": median("ours", "real_token_fraction"),
        "trl_real_token_fraction": median("trl", "real_token_fraction"),
        "rounds": args.rounds,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
