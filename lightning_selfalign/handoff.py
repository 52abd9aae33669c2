"""Hand a rank's training state off the accelerator while something else needs its memory, and take it back.

Between rounds the next round's data is generated on the same GPUs that train: a 15B model's weights, gradients and
optimizer state (~63 GiB of an 80 GB GPU in BENCHMARKS.md) leave no room for a generation engine beside them.
:func:`hand_off` moves every tensor of that state (parameters, their gradients, buffers, optimizer state) to CPU
memory (``cpu``) or to a file (``disk``, for hosts whose memory cannot hold every rank's state) and empties the
allocator's cache; :meth:`Handoff.restore` brings each tensor back to the device it came from. The parameter objects
stay the same (only their storage moves), so the optimizer, the Trainer and the strategy still hold the right ones,
and the state after the round trip is bit-identical to before.

Under FSDP (hand off the strategy's root module) each rank's shard lives in FSDP's flat parameters; with
``use_orig_params`` (Lightning's default) the module's parameters and gradients are views of them. Both move; the
views come back as tensors of their own, which FSDP copies into its flat parameters before the next forward (how it
treats any parameter whose storage changed) and makes views again: for that one step the shard is held twice.
DeepSpeed keeps the parameters' storage in buffers of its own; the rounds callback refuses a cpu or disk handoff there.

Not moved: what the strategy keeps of its own (DDP's gradient buckets, one model's gradients in size, stay on the
GPU), activations (none are alive between epochs) and small tensors held elsewhere (logged metrics).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

HandoffMode = Literal["none", "cpu", "disk"]


@dataclass
class Slot:
    """Where one tensor of the training state lives, so it can be put back: a parameter's data or gradient (the
    parameter object stays), a buffer's data, or an optimizer state entry."""

    kind: Literal["data", "grad", "state"]
    owner: Any
    key: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def get(self) -> torch.Tensor | None:
        if self.kind == "data":
            return self.owner.data
        if self.kind == "grad":
            return self.owner.grad
        return self.owner[self.key]

    def set(self, tensor: torch.Tensor | None) -> None:
        if self.kind == "data":
            # An FSDP flat parameter between steps holds its shard twice, as its data and as ``_local_shard`` (put
            # back into the data after every all-gather): both move, or the shard's memory is never freed.
            shard = getattr(self.owner, "_local_shard", None)
            twin = shard is not None and shard.data_ptr() == self.owner.data.data_ptr()
            self.owner.data = tensor
            if twin:
                self.owner._local_shard = self.owner.data
        elif self.kind == "grad":
            self.owner.grad = tensor
        else:
            self.owner[self.key] = tensor


@dataclass
class Handoff:
    """Training state handed off by :func:`hand_off`; :meth:`restore` puts it back (once)."""

    mode: HandoffMode
    slots: list[Slot]
    path: Path | None = None
    bytes: int = 0
    seconds: float = 0.0
    restored: bool = False

    def restore(self) -> None:
        """Every tensor back on its device, bit for bit; the disk copy is deleted."""
        assert not self.restored, "the training state was already restored"
        if self.path is None:
            place(self.slots, [slot.get().to(slot.device) for slot in self.slots])
        else:
            saved = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
            # copy=True: a tensor mapped from the file must not stay backed by it
            place(self.slots, [tensor.to(slot.device, copy=True) for slot, tensor in zip(self.slots, saved)])
            del saved
            self.path.unlink()
        self.restored = True


def training_slots(module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer]) -> list[Slot]:
    """Every tensor of the training state, each once (tied weights are one parameter), in a fixed order; a
    parameter's data comes before its gradient, so the gradient can follow it to another device."""
    slots: list[Slot] = []
    parameters = {id(p): p for p in [*module.parameters(), *fsdp_flat_parameters(module)]}.values()
    for parameter in parameters:
        slots.append(Slot("data", parameter, device=parameter.device))
        if parameter.grad is not None:
            slots.append(Slot("grad", parameter, device=parameter.grad.device))
    slots += [Slot("data", buffer, device=buffer.device) for buffer in module.buffers()]
    for optimizer in optimizers:
        for state in optimizer.state.values():
            slots += [Slot("state", state, key, value.device) for key, value in state.items()
                      if isinstance(value, torch.Tensor)]  # fmt: skip
    return slots


def fsdp_flat_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The flat parameters of the FSDP modules in ``module``: with ``use_orig_params`` they hold the storage that the
    module's own parameters only view."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed.fsdp import FullyShardedDataParallel

    handles = [m._flat_param for m in FullyShardedDataParallel.fsdp_modules(module)]
    return [flat for flat in handles if flat is not None]


def hand_off(
    module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer], mode: HandoffMode, path: Path | None = None
) -> Handoff:
    """Move the training state of ``module`` and ``optimizers`` off the accelerator: ``cpu`` (host memory; tensors
    already there stay), ``disk`` (to the file ``path``; only empty placeholders stay) or ``none``."""
    started = time.monotonic()
    slots = training_slots(module, optimizers) if mode != "none" else []
    handoff = Handoff(mode, slots, bytes=_held_bytes([slot.get() for slot in slots]))
    if mode == "disk":
        assert path is not None, "a disk handoff needs a file"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save([slot.get() for slot in slots], path)
        handoff.path = path
        place(slots, [None if s.kind == "grad" else torch.empty(0, dtype=s.get().dtype) for s in slots])
    else:
        place(slots, [slot.get().to("cpu") for slot in slots])
    free_accelerator_cache()
    handoff.seconds = time.monotonic() - started
    return handoff


def place(slots: list[Slot], tensors: list[torch.Tensor | None]) -> None:
    """Put ``tensors`` into ``slots``; gradients go in last, once their parameter's data is where they are."""
    grads = [slot for slot in slots if slot.kind == "grad"]
    for slot in grads:
        slot.set(None)
    for slot, tensor in zip(slots, tensors):
        if slot.kind != "grad":
            slot.set(tensor)
    for slot, tensor in zip(slots, tensors):
        if slot.kind == "grad":
            slot.set(tensor)


def free_accelerator_cache() -> None:
    """Return freed blocks to the device, so another process (the generation engine) can have them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def handed_off(
    module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer], mode: HandoffMode, path: Path | None = None
) -> Iterator[Handoff]:
    """The training state is off the accelerator inside the block and back after it, even when the block fails."""
    handoff = hand_off(module, optimizers, mode, path)
    try:
        yield handoff
    finally:
        handoff.restore()


def _held_bytes(tensors: list[torch.Tensor | None]) -> int:
    """Bytes of the storages behind ``tensors``, each once (FSDP's parameters are views of its flat parameters)."""
    storages = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes() for t in tensors
                if t is not None}  # fmt: skip
    return sum(storages.values())
