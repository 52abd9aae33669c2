"""flash-attn availability. The only module that imports ``flash_attn``."""

from __future__ import annotations

from lightning_selfalign.errors import UserError


def require_flash_attention() -> None:
    """Raise a clear error when ``flash_attention_2`` was asked for but cannot run here."""
    import torch

    try:
        import flash_attn  # noqa: F401
    except ImportError:
        raise UserError(
            "--model.attn_implementation flash_attention_2 needs flash-attn: "
            "pip install 'lightning-selfalign[flash-attn]', or use --model.attn_implementation sdpa"
        ) from None
    if not torch.cuda.is_available():
        raise UserError("--model.attn_implementation flash_attention_2 needs a CUDA GPU; use sdpa on CPU")
