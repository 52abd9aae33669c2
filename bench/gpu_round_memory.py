"""GPU memory of a round's end: peak memory per phase while the training state is handed off and an engine generates.

What ``SelfAlignRounds`` does between rounds (``callbacks.close_round``), on one GPU, through the real pieces: a
``SelfAlignLM`` in a Lightning Trainer (bf16-true, packed rows, the recipe's HF Adafactor) trains a few steps on a
~1B StarCoder2-architecture model (random init, saved to a folder first: no download); at the epoch's end the
weights are exported (``export_module``); then for each handoff mode (cpu, then disk) the training state leaves the
GPU (``handed_off``), the hf engine loads the export and generates a batch in the freed memory and is closed, and
the state comes back, asserted bit-identical (``torch.equal``, same dtype, shape and device) to before; last, one
more training step. One JSON line per phase (peak allocated / reserved since the phase began, what is still
allocated / reserved at its end, the device's used memory with the CUDA context, the host's RSS), then a summary.

Unlike a real round: the engine runs in this process (the rounds' worker is a process of its own, with a CUDA
context of its own, ~0.5 GiB more on the device), there is no round checkpoint (written from the GPU tensors, it
adds no GPU memory), and the host RSS includes this script's CPU copy of the state for the identity check.

    python bench/gpu_round_memory.py                   # on an H100/H200: JSON lines on stdout
    python bench/gpu_round_memory.py --smoke           # CPU, tiny shapes: checks the script runs (host RSS only)
    python bench/gpu_round_memory.py --modes disk --output gpu-check/round_memory.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from gpu_train import build, default_kernels, packed_batch, sync  # bench/gpu_train.py, beside this script

from lightning_selfalign.engines import EngineOptions, Request, Sampling, load_engine
from lightning_selfalign.export import export_module
from lightning_selfalign.handoff import handed_off, training_slots
from lightning_selfalign.model import SelfAlignLM
from lightning_selfalign.tiny import build_tokenizer

GIB = 2**30
PROMPT = 'def fibonacci(n: int) -> int:\n    """The n-th Fibonacci number."""\n'


class Meter:
    """Memory of one phase at a time: the GPU's peak since :meth:`start` (which resets it), what is still allocated
    and reserved at :meth:`stop`, the device's used memory (CUDA context and other processes included), host RSS."""

    def __init__(self, device: str, output: Path | None) -> None:
        self.device, self.output, self.records, self.started = device, output, [], 0.0

    def start(self) -> None:
        sync(self.device)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()

    def stop(self, phase: str, **facts: object) -> dict:
        sync(self.device)
        record = {"phase": phase, **facts, "seconds": time.perf_counter() - self.started, **memory(self.device)}
        self.emit(record)
        return record

    def emit(self, record: dict) -> None:
        record = rounded(record)
        self.records.append(record)
        print(json.dumps(record), flush=True)
        if self.output is not None:
            with self.output.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")


def rounded(value: object) -> object:
    """Floats to 4 significant digits, inside dicts too, for readable lines."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return float(f"{value:.4g}") if isinstance(value, float) else value


def memory(device: str) -> dict[str, float | None]:
    host = {"rss_gib": rss_gib()}
    if device != "cuda":
        return host
    free, total = torch.cuda.mem_get_info()
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
        "allocated_gib": torch.cuda.memory_allocated() / GIB,
        "reserved_gib": torch.cuda.memory_reserved() / GIB,
        "device_used_gib": (total - free) / GIB,
        **host,
    }


def rss_gib() -> float | None:
    """This process's resident memory now (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / GIB


def snapshot(trainer: pl.Trainer) -> list[tuple[str, torch.device, torch.Tensor]]:
    """Every tensor of the training state (as the handoff enumerates it): its kind, device and a CPU copy."""
    slots = training_slots(trainer.strategy.model, trainer.optimizers)
    return [(slot.kind, slot.get().device, slot.get().detach().to("cpu", copy=True)) for slot in slots]


def identical(before: list, after: list) -> bool:
    same_layout = [(k, d, t.dtype, t.shape) for k, d, t in before] == [(k, d, t.dtype, t.shape) for k, d, t in after]
    return same_layout and all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(before, after))


class RoundEnd(pl.Callback):
    """Measures the training steps, then at epoch 0's end the round's close as ``close_round`` runs it (export, then
    the handoff with an engine generating, once per mode), then the next training step."""

    def __init__(self, meter: Meter, workdir: Path, modes: list[str], requests: list[Request], sampling: Sampling):
        self.meter, self.workdir, self.modes, self.requests, self.sampling = meter, workdir, modes, requests, sampling
        self.handoffs: dict[str, dict] = {}
        self.state_gib: dict[str, float] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.meter.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1:
            self.meter.stop("train_after", steps=trainer.global_step, loss=float(outputs["loss"]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != 0:
            return
        self.meter.stop("train", steps=trainer.global_step)
        self.meter.start()
        model_dir = export_module(pl_module, self.workdir / "round-0" / "model")
        self.meter.stop("export")
        before = snapshot(trainer)
        for kind in ("data", "grad", "state"):
            self.state_gib[kind] = sum(t.nbytes for k, _, t in before if k == kind) / GIB
        for mode in self.modes:
            self.round_trip(trainer, mode, model_dir, before)
        self.meter.start()

    def round_trip(self, trainer: pl.Trainer, mode: str, model_dir: Path, before: list) -> None:
        """One handoff in ``mode`` with the hf engine generating while the state is away, as between rounds."""
        self.meter.start()
        path = self.workdir / "handoff" / "rank-0.pt"
        with handed_off(trainer.strategy.model, trainer.optimizers, mode, path) as moved:
            self.handoffs[mode] = {"seconds": moved.seconds, "gib": moved.bytes / GIB}
            self.meter.stop("handoff", mode=mode, handoff_s=moved.seconds, handoff_gib=moved.bytes / GIB)
            self.meter.start()
            engine = load_engine("hf", str(model_dir), EngineOptions(batch_size=len(self.requests)))
            completions = engine.generate(self.requests, self.sampling)
            engine.close()
            del engine
            self.meter.stop("generate", mode=mode, sequences=len(completions),
                            new_tokens=sum(c.num_tokens for c in completions))  # fmt: skip
            self.meter.start()
        restored = self.meter.stop("restore", mode=mode)
        self.handoffs[mode]["restore_s"] = restored["seconds"]
        assert identical(before, snapshot(trainer)), f"the {mode} handoff changed the training state"
        self.handoffs[mode]["identical"] = True


def write_base_model(size: str, device: str, folder: Path) -> int:
    """A random-init StarCoder2-architecture folder with a tokenizer trained on local source (no download); returns
    the model's vocabulary size."""
    torch.manual_seed(0)
    model = build(size, device, "sdpa", checkpointing=False)
    model.config.use_cache = True  # as a released model's config: the engine generates with its KV cache
    model.save_pretrained(folder)
    vocab = model.config.vocab_size
    build_tokenizer(vocab_size=min(4096, vocab), corpus_files=20).save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return vocab


def run(args: argparse.Namespace, device: str, workdir: Path, meter: Meter) -> dict:
    size = "smoke" if args.smoke else args.size
    attn = args.attn or default_kernels(device)[0]
    vocab = write_base_model(size, device, workdir / "base")
    module = SelfAlignLM(str(workdir / "base"), attn_implementation=attn, optimizer="adafactor",
                         gradient_checkpointing=size == "15b")  # fmt: skip
    requests = [Request(text=PROMPT, messages=None, seed=seed) for seed in range(args.sequences)]
    round_end = RoundEnd(meter, workdir, args.modes.split(","), requests, Sampling(max_new_tokens=args.new_tokens))
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1,
        precision="bf16-true" if device == "cuda" else "32-true", max_epochs=2, max_steps=args.steps + 1,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(workdir / "train"), callbacks=[round_end],
    )  # fmt: skip
    batch = packed_batch(vocab, args.rows, args.length, "cpu")
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * args.steps, batch_size=None))
    return {
        "summary": True,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": size,
        "params_b": sum(p.numel() for p in module.parameters()) / 1e9,
        "attn": attn,
        "tokens_per_step": args.rows * args.length,
        "state_gib": round_end.state_gib,
        "handoff": round_end.handoffs,
        "phases": {phase_name(r): {k: r[k] for k in SUMMARY_FIELDS if k in r} for r in meter.records},
    }


SUMMARY_FIELDS = ("peak_allocated_gib", "reserved_gib", "device_used_gib", "rss_gib", "seconds")


def phase_name(record: dict) -> str:
    return f"{record['phase']}_{record['mode']}" if "mode" in record else record["phase"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (checks the script, no GPU numbers)")
    parser.add_argument("--size", choices=["1b", "15b"], default="1b", help="15b: ~100 GB of disk for --modes disk")
    parser.add_argument("--rows", type=int, default=4, help="packed rows per training step")
    parser.add_argument("--length", type=int, default=4096, help="tokens per packed row")
    parser.add_argument("--steps", type=int, default=4, help="training steps before the round's end")
    parser.add_argument("--attn", default=None, help="attention kernel (default: flash_attention_2 if installed)")
    parser.add_argument("--modes", default="cpu,disk", help="handoff modes, in turn (none: engine beside the state)")
    parser.add_argument("--sequences", type=int, default=16, help="sequences the engine generates (one batch)")
    parser.add_argument("--new_tokens", type=int, default=256, help="tokens generated per sequence")
    parser.add_argument("--workdir", default=None, help="folder for the models and the disk handoff (default: temp)")
    parser.add_argument("--output", default=None, help="JSONL copy of the lines (default: $OUT/round_memory.jsonl)")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.length, args.steps, args.sequences, args.new_tokens = 1, 256, 2, 2, 8
    device = "cpu" if args.smoke else "cuda"
    output = args.output or (os.path.join(os.environ["OUT"], "round_memory.jsonl") if os.environ.get("OUT") else None)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text("", encoding="utf-8")
    meter = Meter(device, Path(output) if output else None)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        meter.emit(run(args, device, Path(workdir), meter))


if __name__ == "__main__":
    main()
