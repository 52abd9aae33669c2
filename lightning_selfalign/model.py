"""``SelfAlignLM``: the LightningModule around any transformers causal LM (StarCoder2-15B the reference).

The batch contract (from :class:`~lightning_selfalign.datamodule.InstructionDataModule`): ``input_ids`` and
``labels`` (-100 outside response tokens; the model shifts), and either ``attention_mask`` (padded) or
``position_ids`` restarting at 0 per example (packed, no attention across examples); ``window_tokens``, the
label tokens in the whole gradient-accumulation window over all ranks divided by the world size, so after DDP's
gradient averaging the loss is normalised per token over the global window.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.aggregation import MeanMetric

from lightning_selfalign.errors import UserError
from lightning_selfalign.optimizers import OptimizerName, ScheduleName, build_optimizer, build_scheduler

IGNORE_INDEX = -100


def zero_dropout_config(config: Any) -> list[str]:
    """Set every dropout probability in a transformers config to 0; returns the fields changed."""
    changed = []
    for key, value in list(vars(config).items()):
        is_dropout = "dropout" in key or key.endswith("_pdrop")
        if is_dropout and isinstance(value, float) and value > 0:
            setattr(config, key, 0.0)
            changed.append(key)
    return changed


def active_dropout(module: torch.nn.Module) -> list[str]:
    """Names of dropout modules or float ``*dropout*`` attributes still > 0 anywhere in ``module``."""
    active = []
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.dropout._DropoutNd) and sub.p > 0:
            active.append(name or type(sub).__name__)
        for attr, value in vars(sub).items():
            if ("dropout" in attr or attr.endswith("_pdrop")) and isinstance(value, float) and value > 0:
                active.append(f"{name}.{attr}")
    return active


# Attention kernels that take a packed row's example boundaries as a dense (B, 1, T, T) mask from us. The others
# (flash_attention_2, flex_attention) get them from the position ids alone: flash-attn as variable-length
# sequences, flex attention as a block mask transformers builds, which skips the blocks across examples.
DENSE_MASK_ATTENTION = frozenset({"sdpa", "eager"})


def require_packed_flex_attention() -> None:
    """flex_attention finds a packed row's examples in its position ids only with transformers' packed-mask support."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        raise UserError(
            "--model.attn_implementation flex_attention needs a transformers that builds packed-sequence masks "
            "from position ids (masking_utils.find_packed_sequence_indices); upgrade transformers or use sdpa"
        ) from None


def packed_attention_mask(position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, T, T) mask: causal within each example, nothing across examples.

    An example starts wherever ``position_ids`` is 0. 0 where attention is allowed, ``finfo.min`` elsewhere
    (eager attention needs the additive form; sdpa takes it too).
    """
    segment = (position_ids == 0).cumsum(dim=-1)
    same = segment[:, :, None] == segment[:, None, :]
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy of next-token prediction (0 where unlabeled) and the label mask."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(shift_labels)
    return losses, shift_labels != IGNORE_INDEX


def per_sample_loss(losses: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """Mean over examples of each example's mean token loss (the reference Trainer at batch size 1)."""
    if position_ids is None:
        segments = torch.arange(losses.shape[0], device=losses.device)[:, None].expand_as(losses)
    else:
        starts = (position_ids == 0).cumsum(dim=-1)[:, 1:]
        offsets = torch.arange(losses.shape[0], device=losses.device)[:, None] * (position_ids.shape[-1] + 1)
        segments = starts + offsets
    segments = segments[mask]
    _, segments = torch.unique(segments, return_inverse=True)
    count = int(segments.max()) + 1 if segments.numel() else 0
    sums = torch.zeros(count, device=losses.device).index_add_(0, segments, losses[mask])
    tokens = torch.zeros(count, device=losses.device).index_add_(0, segments, torch.ones_like(losses[mask]))
    return (sums / tokens).mean() if count else losses.sum() * 0


class SelfAlignLM(pl.LightningModule):
    """Supervised fine-tuning of a causal LM on instruction/response pairs, the StarCoder2-Instruct recipe.

    Args:
        model_name_or_path: Hugging Face model id or local folder (any ``AutoModelForCausalLM``).
        attn_implementation: ``flash_attention_2`` (GPU, needs the flash-attn extra), ``flex_attention``
            (GPU; PyTorch's block-sparse kernel: packed rows skip the blocks across examples), ``sdpa`` or
            ``eager``.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        optimizer: ``adafactor`` (Hugging Face Adafactor as the reference used it), ``adamw``, or the
            bitsandbytes ``adamw_8bit`` / ``paged_adamw_8bit``.
        learning_rate: Peak learning rate.
        weight_decay: Decoupled weight decay.
        warmup_ratio: Fraction of the total optimizer steps spent in linear warmup.
        lr_schedule: Decay after warmup: ``linear`` to 0 (the reference), ``cosine``, or ``constant``.
        loss_normalization: ``token``: mean over every response token of the accumulation window (what
            ``transformers.Trainer`` does now); ``sample``: mean over examples of each example's mean token
            loss (what the reference's older Trainer did with batch size 1).
        trust_remote_code: Allow model code from the model folder.
        peft: ``none`` (full fine-tuning, the reference), ``lora`` (low-rank adapters on a frozen base), or
            ``qlora`` (the adapters on a 4-bit NF4 base with double quantisation; CUDA and bitsandbytes).
        lora_rank: Rank r of each adapter.
        lora_alpha: Adapter scale numerator: the update is alpha / r * B A.
        lora_dropout: Dropout on the adapters' input (0 keeps the recipe's no-dropout rule; the QLoRA paper used
            0.05-0.1).
        lora_target_modules: Linear layers that get adapters (default: every attention and MLP projection).
    """

    def __init__(
        self,
        model_name_or_path: str,
        attn_implementation: Literal["flash_attention_2", "flex_attention", "sdpa", "eager"] = "sdpa",
        gradient_checkpointing: bool = False,
        optimizer: OptimizerName = "adafactor",
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.05,
        lr_schedule: ScheduleName = "linear",
        loss_normalization: Literal["token", "sample"] = "token",
        trust_remote_code: bool = False,
        peft: Literal["none", "lora", "qlora"] = "none",
        lora_rank: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | None = None,
    ) -> None:
        super().__init__()
        problems = []
        if peft != "none":
            from lightning_selfalign.adapters import require_peft, settings_of

            problems += settings_of({"lora_rank": lora_rank, "lora_alpha": lora_alpha,
                                     "lora_dropout": lora_dropout}).problems()  # fmt: skip
            require_peft()
            # Checkpoints hold the adapters only (the frozen base is reloaded from model_name_or_path).
            self.strict_loading = False
        if not 0 <= warmup_ratio < 1:
            problems.append(f"--model.warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if learning_rate <= 0:
            problems.append(f"--model.learning_rate must be > 0, got {learning_rate}")
        if problems:
            raise UserError("; ".join(problems))
        self.save_hyperparameters()
        self.model: torch.nn.Module | None = None
        self.val_loss = MeanMetric()
        self.val_accuracy = MeanMetric()
        self._window_loss = 0.0
        self._window_tokens = 0
        self._window_real = 0
        self._window_computed = 0
        self._window_start = time.perf_counter()

    # -- model -------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build the network here so FSDP / DeepSpeed can shard it at construction."""
        if self.model is not None:
            return
        peft = self.hparams.get("peft", "none")
        quantization = None
        if peft == "qlora":
            from lightning_selfalign.adapters import quantization_config

            quantization = quantization_config()
        model = load_causal_lm(
            self.hparams.model_name_or_path,
            attn_implementation=self.hparams.attn_implementation,
            trust_remote_code=self.hparams.trust_remote_code,
            quantization_config=quantization,
        )
        if self.hparams.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if peft != "none":
            from lightning_selfalign.adapters import add_adapters, settings_of

            model = add_adapters(model, settings_of(dict(self.hparams)), quantized=peft == "qlora")
        # from_pretrained returns eval mode and Lightning keeps submodule modes: gradient checkpointing
        # (and any model code that branches on self.training) needs train mode.
        model.train()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits for a batch in the DataModule's contract (padded or packed)."""
        assert self.model is not None, "configure_model() builds the network before the first forward"
        attention_mask = batch.get("attention_mask")
        position_ids = batch.get("position_ids")
        packed = attention_mask is None and position_ids is not None
        if packed and self.hparams.attn_implementation in DENSE_MASK_ATTENTION:
            attention_mask = packed_attention_mask(position_ids, self._compute_dtype())
        return self.model(
            input_ids=batch["input_ids"], attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits

    def _compute_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- steps -------------------------------------------------------------------------------------------
    def shared_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-position losses, label mask and logits of one micro-batch."""
        logits = self(batch)
        losses, mask = token_losses(logits, batch["labels"])
        return losses, mask, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses, mask, _ = self.shared_step(batch)
        label_tokens = mask.sum()
        accumulate = self.trainer.accumulate_grad_batches
        if self.hparams.loss_normalization == "sample":
            loss = per_sample_loss(losses, mask, batch.get("position_ids") if "attention_mask" not in batch else None)
            window_contribution = loss.detach() / accumulate
        else:
            window_tokens = batch.get("window_tokens", label_tokens.float())
            window_loss = losses.sum() / window_tokens.clamp(min=1e-6)
            # Lightning divides the returned loss by accumulate_grad_batches; undo it so the window sums to
            # (sum of token losses) / (tokens in the window), exactly Trainer's num_items_in_batch.
            loss = window_loss * accumulate
            window_contribution = window_loss.detach()
        # Kept as device tensors and read once per optimizer step: int()/float() here would make every
        # micro-batch wait for the GPU. Double precision keeps the logged window loss as exact as before.
        self._window_loss = self._window_loss + window_contribution.double()
        self._window_tokens = self._window_tokens + label_tokens
        self._window_real = self._window_real + self._real_tokens(batch)
        self._window_computed += batch["input_ids"].numel()
        self.log("train/micro_loss", losses.sum().detach() / label_tokens.clamp(min=1), prog_bar=False)
        return loss

    @staticmethod
    def _real_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor | int:
        if "num_real_tokens" in batch:
            return batch["num_real_tokens"]
        if "attention_mask" in batch:
            return batch["attention_mask"].sum()
        return batch["input_ids"].numel()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.detach().float().norm() for p in self.parameters() if p.grad is not None]
        grad_norm = torch.stack(grads).norm() if grads else torch.tensor(0.0)
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        real = float(self._window_real)
        self.log_dict(
            {
                "train/loss": float(self._window_loss),
                "train/grad_norm": grad_norm.item(),
                "train/lr": optimizer.param_groups[0]["lr"],
                "train/tokens_per_s": real / elapsed,
                "train/real_token_fraction": real / max(1, self._window_computed),
                "train/label_tokens": float(self._window_tokens),
            },
            prog_bar=True,
        )
        self._window_loss, self._window_tokens, self._window_real, self._window_computed = 0.0, 0, 0, 0
        self._window_start = time.perf_counter()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        losses, mask, logits = self.shared_step(batch)
        tokens = mask.sum()
        if tokens == 0:
            return
        predictions = logits[:, :-1].argmax(dim=-1)
        correct = (predictions == batch["labels"][:, 1:]) & mask
        self.val_loss.update(losses.sum() / tokens, weight=tokens)
        self.val_accuracy.update(correct.sum() / tokens, weight=tokens)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log_dict(
            {
                "val/loss": loss,
                "val/perplexity": torch.exp(loss.clamp(max=50)),
                "val/token_accuracy": self.val_accuracy.compute(),
            },
            prog_bar=True,
            sync_dist=False,
        )
        self.val_loss.reset()
        self.val_accuracy.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The latest validation metrics travel with the weights, so `selfalign export` can put them in the card.
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            checkpoint["selfalign_metrics"] = metrics
        if self.hparams.get("peft", "none") != "none":  # the frozen base is model_name_or_path: keep the adapters
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if ".lora_" in k}

    # -- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(
            (p for p in self.parameters() if p.requires_grad),
            self.hparams.optimizer,
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError("cannot size the lr schedule: set --trainer.max_steps or --trainer.max_epochs")
        scheduler = build_scheduler(optimizer, int(total), self.hparams.warmup_ratio, self.hparams.lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_causal_lm(
    model_name_or_path: str,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    quantization_config: Any = None,
) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` with every dropout set to 0 and verified off.

    ``dtype`` defaults to torch's current default dtype, which Lightning's precision plugin sets during
    ``configure_model`` (bf16 under ``bf16-true``), so weights are created in the training dtype directly.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"--model.model_name_or_path {model_name_or_path!r}: cannot load a config ({exc})") from None
    zero_dropout_config(config)
    if attn_implementation == "flash_attention_2":
        from lightning_selfalign.flash import require_flash_attention

        require_flash_attention()
    if attn_implementation == "flex_attention":
        require_packed_flex_attention()
    model = AutoModelForCausalLM.from_pretrained(
        model_name_or_path,
        config=config,
        dtype=torch.bfloat16 if quantization_config is not None else dtype or torch.get_default_dtype(),
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        **({"quantization_config": quantization_config} if quantization_config is not None else {}),
    )
    still_active = active_dropout(model)
    assert not still_active, f"dropout still active after zeroing the config: {still_active}"
    return model
