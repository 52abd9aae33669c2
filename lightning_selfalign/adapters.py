"""Parameter-efficient fine-tuning: LoRA and QLoRA adapters on the causal LM, and their export.

- ``lora``: low-rank adapters (``peft``) on the chosen linear layers; the base weights are frozen, only the adapters
  train, and checkpoints hold the adapters alone (the base is reloaded from its folder; resume is exact).
- ``qlora``: the same adapters on a base loaded in 4-bit NF4 with double quantisation and bf16 compute, as the QLoRA
  paper sets it (bitsandbytes, CUDA only).

Export: by default the adapters are merged into the base weights (W + alpha/r * B A), computed from the state dict
alone, so any checkpoint exports without peft and the folder loads as a plain model in transformers and vLLM;
``--merge false`` writes the adapter in peft's layout instead (``adapter_config.json`` + ``adapter_model.safetensors``,
loaded with ``PeftModel.from_pretrained`` or vLLM's LoRA support), beside the tokenizer. This is the only module
that imports ``peft``; :func:`quantization_config` is the only place that asks transformers for bitsandbytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_selfalign.errors import UserError

ADAPTER_NAME = "default"
# Every linear projection of StarCoder2's attention and MLP (peft's "all-linear" minus the LM head).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """Rank, scale, dropout and target modules of the adapters."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def problems(self) -> list[str]:
        found = []
        if self.rank < 1:
            found.append(f"--model.lora_rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            found.append(f"--model.lora_alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            found.append(f"--model.lora_dropout must be in [0, 1), got {self.dropout}")
        return found


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserError("--model.peft needs the peft package: pip install 'lightning-selfalign[lora]'") from None


def quantization_config() -> Any:
    """transformers' 4-bit NF4 with double quantisation and bf16 compute (the QLoRA paper's settings)."""
    if not torch.cuda.is_available():
        raise UserError("--model.peft qlora needs a CUDA GPU (bitsandbytes 4-bit); use --model.peft lora on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        hint = "pip install 'lightning-selfalign[bitsandbytes]'"
        raise UserError(f"--model.peft qlora needs bitsandbytes: {hint}") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip


def add_adapters(model: torch.nn.Module, settings: LoraSettings, quantized: bool = False) -> torch.nn.Module:
    """``model`` wrapped with fresh LoRA adapters on the target modules that exist in it (base weights frozen)."""
    require_peft()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    targets = [name for name in settings.target_modules if name in present]
    if not targets:
        raise UserError(f"--model.lora_target_modules: none of {list(settings.target_modules)} is a linear layer of "
                        f"this model (it has {sorted(present)})")  # fmt: skip
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, config)


def is_adapted(state: dict[str, torch.Tensor]) -> bool:
    return any(".lora_A." in key for key in state)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base tensors keyed as the plain model, adapter tensors keyed ``<module>.lora_A.default.weight``) of a
    peft-wrapped model's state dict; quantisation state and peft's ``base_model.model.`` / ``.base_layer`` go."""
    base: dict[str, torch.Tensor] = {}
    adapters: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        plain = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        (adapters if ".lora_" in key else base)[plain] = value
    return base, adapters


def merge_adapters(base: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor],
                   scaling: float) -> dict[str, torch.Tensor]:  # fmt: skip
    """``base`` with W + scaling * B @ A for every adapted module (a new dict; ``base`` is not changed)."""
    merged = dict(base)
    for key, a in adapters.items():
        if f".lora_A.{ADAPTER_NAME}." not in key:
            continue
        stem = key.split(".lora_A.")[0]
        b = adapters[key.replace(".lora_A.", ".lora_B.")]
        weight = base[f"{stem}.weight"]
        merged[f"{stem}.weight"] = (weight.float() + (b.float() @ a.float()) * scaling).to(weight.dtype)
    return merged


def adapted_targets(adapters: dict[str, torch.Tensor]) -> list[str]:
    """Names of the modules that carry adapters (``q_proj``, ...), as peft's config lists them."""
    return sorted({key.split(".lora_A.")[0].rsplit(".", 1)[-1] for key in adapters if ".lora_A." in key})


def write_adapter(adapters: dict[str, torch.Tensor], settings: LoraSettings, base_model: str, output: Path) -> None:
    """``adapter_model.safetensors`` and ``adapter_config.json`` as ``PeftModel.save_pretrained`` writes them."""
    from safetensors.torch import save_file

    output.mkdir(parents=True, exist_ok=True)
    tensors = {f"base_model.model.{key.replace(f'.{ADAPTER_NAME}.', '.')}": value.contiguous()
               for key, value in adapters.items()}  # fmt: skip
    save_file(tensors, output / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "r": settings.rank,
        "lora_alpha": settings.alpha, "lora_dropout": settings.dropout, "target_modules": adapted_targets(adapters),
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False,
    }  # fmt: skip
    (output / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def settings_of(hparams: dict[str, Any]) -> LoraSettings:
    """The adapters' settings recorded in a SelfAlignLM's hyperparameters."""
    targets = hparams.get("lora_target_modules")
    return LoraSettings(rank=hparams.get("lora_rank", 16), alpha=hparams.get("lora_alpha", 32),
                        dropout=hparams.get("lora_dropout", 0.0),
                        target_modules=tuple(targets) if targets else DEFAULT_TARGETS)  # fmt: skip
