"""GPU readiness: MFU and peak memory of the training step on one GPU.

1. ~1B StarCoder2-architecture model (random init), packed rows, bf16 weights, HF Adafactor: model FLOPs
   utilisation, step time split into forward+backward and optimizer, and peak memory, for each attention
   kernel asked for (default: flash_attention_2 when flash-attn is installed, else sdpa with our dense packed
   mask and flex_attention with transformers' block mask), through the same mask / loss / optimizer code that
   ``selfalign fit`` runs.
2. The StarCoder2-15B config (random init, bf16, gradient checkpointing, Adafactor): peak memory of one
   optimizer step at sequence 1280 and 4096.

    python bench/gpu_train.py                      # on an H100/H200: both parts, JSON on stdout
    python bench/gpu_train.py --smoke              # CPU, tiny shapes: checks the script itself runs
    python bench/gpu_train.py --attn sdpa --skip_15b
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lightning_selfalign.model import DENSE_MASK_ATTENTION, packed_attention_mask, token_losses
from lightning_selfalign.optimizers import build_optimizer

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def starcoder2_config(size: str):
    from transformers import Starcoder2Config

    shapes = {
        # hidden, layers, heads, kv heads, mlp
        "smoke": (64, 2, 4, 2, 256),
        "1b": (2048, 20, 16, 4, 8192),
        "15b": (6144, 40, 48, 4, 24576),
    }
    hidden, layers, heads, kv, mlp = shapes[size]
    return Starcoder2Config(
        vocab_size=49152 if size != "smoke" else 512, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=mlp, max_position_embeddings=16384,
        residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0, use_cache=False,
        bos_token_id=0, eos_token_id=0,  # as StarCoder2-15B's own config (the class default lies outside the vocab)
    )  # fmt: skip


def build(size: str, device: str, attn: str, checkpointing: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(starcoder2_config(size), dtype=dtype, attn_implementation=attn)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def packed_batch(vocab: int, rows: int, length: int, device: str) -> dict[str, torch.Tensor]:
    """Rows of several examples each (lengths 200-1000), position ids restarting per example."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (rows, length), generator=generator)
    position_ids = torch.empty(rows, length, dtype=torch.long)
    for row in range(rows):
        start = 0
        while start < length:
            size = min(int(torch.randint(200, 1000, (1,), generator=generator)), length - start)
            position_ids[row, start : start + size] = torch.arange(size)
            start += size
    labels = input_ids.clone()
    labels[position_ids < 50] = -100
    batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def forward_backward(model, batch, attn: str) -> torch.Tensor:
    mask = None
    if attn in DENSE_MASK_ATTENTION:
        mask = packed_attention_mask(batch["position_ids"], next(model.parameters()).dtype)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).logits
    losses, labelled = token_losses(logits, batch["labels"])
    loss = losses.sum() / labelled.sum()
    loss.backward()
    return loss.detach()


def optimizer_step(optimizer) -> None:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(model, optimizer, batch, attn: str) -> float:
    loss = forward_backward(model, batch, attn)
    optimizer_step(optimizer)
    return float(loss)


def flops_per_token(model: torch.nn.Module, config, seq: int) -> float:
    """6N for the dense parts plus causal attention (6 * layers * hidden * seq), the usual MFU count."""
    params = sum(p.numel() for p in model.parameters())
    return 6 * params + 6 * config.num_hidden_layers * config.hidden_size * seq


def measure_mfu(size: str, device: str, attn: str, rows: int, length: int, steps: int, accumulate: int = 1) -> dict:
    """``steps`` optimizer steps, each after ``accumulate`` micro-batches of ``rows`` x ``length`` tokens."""
    model = build(size, device, attn, checkpointing=False)
    optimizer = build_optimizer(model.parameters(), "adafactor", lr=1e-5)
    batch = packed_batch(model.config.vocab_size, rows, length, device)
    train_step(model, optimizer, batch, attn)
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    backward_s = optimizer_s = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        for _ in range(accumulate):
            forward_backward(model, batch, attn)
        sync(device)
        middle = time.perf_counter()
        optimizer_step(optimizer)
        sync(device)
        backward_s += middle - start
        optimizer_s += time.perf_counter() - middle
    seconds = (backward_s + optimizer_s) / steps
    tokens = rows * length * accumulate
    achieved = flops_per_token(model, model.config, length) * tokens / seconds
    peak = peak_tflops() * 1e12
    return {
        "model": size,
        "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "attn": attn,
        "accumulate": accumulate,
        "tokens_per_step": tokens,
        "step_s": seconds,
        "forward_backward_s": backward_s / steps,
        "optimizer_s": optimizer_s / steps,
        "tokens_per_s": tokens / seconds,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / peak if peak else None,
        "peak_memory_gib": peak_memory(device),
    }


def measure_memory(size: str, device: str, attn: str, lengths: list[int]) -> list[dict]:
    model = build(size, device, attn, checkpointing=True)
    optimizer = build_optimizer(model.parameters(), "adafactor", lr=1e-5)
    results = []
    for length in lengths:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        batch = packed_batch(model.config.vocab_size, 1, length, device)
        try:
            train_step(model, optimizer, batch, attn)
            sync(device)
            start = time.perf_counter()
            train_step(model, optimizer, batch, attn)
            sync(device)
            seconds = time.perf_counter() - start
            results.append({"model": size, "seq": length, "peak_memory_gib": peak_memory(device), "fits": True,
                            "step_s": seconds, "tokens_per_s": length / seconds})  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            results.append({"model": size, "seq": length, "peak_memory_gib": None, "fits": False})
    return results


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def peak_tflops() -> float:
    if not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 0.0)


def default_kernels(device: str) -> list[str]:
    if device != "cuda":
        return ["sdpa"]  # flex attention has no backward on CPU
    try:
        import flash_attn  # noqa: F401

        return ["flash_attention_2"]
    except ImportError:
        return ["sdpa", "flex_attention"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (checks the script, no numbers)")
    parser.add_argument("--rows", type=int, default=4, help="packed rows per step for the 1B MFU run")
    parser.add_argument("--length", type=int, default=4096, help="tokens per packed row for the 1B MFU run")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimizer step (1B run)")
    parser.add_argument("--attn", default=None, help="comma-separated attention kernels for the 1B run")
    parser.add_argument("--skip_15b", action="store_true")
    args = parser.parse_args()

    device = "cpu" if args.smoke else "cuda"
    kernels = args.attn.split(",") if args.attn else default_kernels(device)
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    size = "smoke" if args.smoke else "1b"
    rows, length = (2, 256) if args.smoke else (args.rows, args.length)
    report["mfu_1b"] = []
    for attn in kernels:
        try:
            result = measure_mfu(size, device, attn, rows, length, 2 if args.smoke else args.steps, args.accumulate)
        except Exception as exc:  # one kernel failing (a compile error, say) still reports the others
            result = {"model": size, "attn": attn, "error": f"{type(exc).__name__}: {exc}"[:500]}
        report["mfu_1b"].append(result)
        print(json.dumps(result), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_15b:
        big = "smoke" if args.smoke else "15b"
        report["memory_15b"] = measure_memory(big, device, kernels[0], [128, 256] if args.smoke else [1280, 4096])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
