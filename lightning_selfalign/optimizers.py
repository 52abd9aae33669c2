"""Optimizers and the learning-rate schedule of the recipe. The only module that imports bitsandbytes.

The default is the Hugging Face Adafactor exactly as StarCoder2-Instruct trained with it
(``scale_parameter=False, relative_step=False, warmup_init=False``, fixed lr). ``torch.optim.Adafactor`` is a
different algorithm (its step is scaled by parameter RMS) and is deliberately not offered under that name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

from lightning_selfalign.errors import UserError

OptimizerName = Literal["adafactor", "adamw", "adamw_8bit", "paged_adamw_8bit"]
ScheduleName = Literal["linear", "cosine", "constant"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: OptimizerName,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """The optimizer called ``name``; bitsandbytes ones need the ``bitsandbytes`` extra."""
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(
            params,
            lr=lr,
            weight_decay=weight_decay,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError(
                f"--model.optimizer {name} needs bitsandbytes: pip install 'lightning-selfalign[bitsandbytes]'"
            ) from None
        cls = bnb.optim.PagedAdamW8bit if name.startswith("paged") else bnb.optim.AdamW8bit
        return cls(params, lr=lr, weight_decay=weight_decay, betas=betas)
    raise UserError(f"--model.optimizer {name!r}: choose one of adafactor, adamw, adamw_8bit, paged_adamw_8bit")


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length as Hugging Face's Trainer computes it from a ratio."""
    return math.ceil(warmup_ratio * total_steps)


def schedule_factor(step: int, total_steps: int, warmup_steps: int, name: ScheduleName) -> float:
    """Multiplier of the base lr at optimizer step ``step``: linear warmup, then ``name`` decay to 0."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if name == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if name == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


class Schedule:
    """The lr multiplier of optimizer step ``step``: ``schedule_factor`` over ``total_steps`` steps from ``start``.

    A callable object rather than a closure so that ``LambdaLR`` keeps its fields in checkpoints: a resumed run goes
    on along the same curve, also after :func:`restart_schedule` began a new one (one per self-align round)."""

    def __init__(self, total_steps: int, warmup_ratio: float, name: ScheduleName, start: int = 0) -> None:
        self.total_steps, self.warmup_ratio, self.name, self.start = total_steps, warmup_ratio, name, start

    def __call__(self, step: int) -> float:
        warmup = warmup_steps_for(self.total_steps, self.warmup_ratio)
        return schedule_factor(step - self.start, self.total_steps, warmup, self.name)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, name: ScheduleName
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR over ``total_steps`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(total_steps, warmup_ratio, name))


def restart_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, total_steps: int) -> bool:
    """Begin ``scheduler``'s warmup and decay again from its current step, over ``total_steps`` more steps, and set
    the optimizer's lr for the next step accordingly. False (nothing changed) when it is not one of ours."""
    schedules = getattr(scheduler, "lr_lambdas", [])
    if not schedules or not all(isinstance(schedule, Schedule) for schedule in schedules):
        return False
    step = scheduler.last_epoch
    for schedule, group, base_lr in zip(schedules, scheduler.optimizer.param_groups, scheduler.base_lrs):
        schedule.start, schedule.total_steps = step, total_steps
        group["lr"] = base_lr * schedule(step)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    return True
