"""Pretraining a small causal LM from scratch on the world's documents, on CPU.

Plain next-token prediction over the documents joined by EOS and cut into random 512-token windows (a base
model's pretraining, not the SFT recipe: AdamW, warmup then cosine decay). ``pretraining.json`` beside the
weights records the settings, the loss curve, the time taken and the fingerprints of the stage prompts the
documents were rendered with, so a test can tell when the committed weights no longer match the prompts.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

BLOCK = 512
BATCH = 16


def token_stream(tokenizer: Any, documents: list[str]) -> Any:
    """All documents as one int64 tensor, each followed by EOS."""
    import torch

    ids: list[int] = []
    for encoded in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def learning_rate(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain_model(model: Any, tokenizer: Any, documents: list[str], output: Path, steps: int, seed: int = 0,
                   peak_lr: float = 3e-3, progress: bool = True, batch: int = BATCH,
                   recipe: dict | None = None, stop_at: int | None = None) -> dict:  # fmt: skip
    """Train ``model`` in place for ``steps`` steps of ``batch`` x ``BLOCK`` tokens; writes ``pretraining.json``
    (with ``recipe``, how the documents were made, under its own key). ``stop_at`` stops after that many steps of
    the same schedule: the run's checkpoint at that step, its learning rate not yet decayed."""
    import torch

    from lightning_selfalign.prompts import STAGES, prompt_fingerprint
    from lightning_selfalign.toyworld.documents import PROMPT_FORMAT

    stream = token_stream(tokenizer, documents)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    curve, started = [], time.perf_counter()
    taken = steps if stop_at is None else stop_at
    bar = tqdm(range(taken), desc="pretrain", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        starts = torch.randint(0, len(stream) - BLOCK - 1, (batch,), generator=generator)
        blocks = torch.stack([stream[s : s + BLOCK] for s in starts.tolist()])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr)
        loss = model(input_ids=blocks, labels=blocks).loss  # the model shifts the labels itself
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 16) == 0 or step == taken - 1:
            curve.append([step, round(loss.item(), 4)])
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    facts = {
        "documents": len(documents), "tokens": len(stream), "steps": steps, "stopped_at": taken,
        "batch": batch, "block": BLOCK, "peak_lr": peak_lr, "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()), "loss_curve": curve,
        "prompt_fingerprints": {stage: prompt_fingerprint(stage, chat=False, num_fewshot=0, prompt_format=PROMPT_FORMAT)
            for stage in STAGES},
        "recipe": recipe or {},
    }  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    (output / "pretraining.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return facts
