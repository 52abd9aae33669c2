"""Conversations -> token ids + loss mask, in one chat-template pass, with an explicit over-length policy.

The chat template wraps each assistant turn (response + EOS) in ``{% generation %}``, so
``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly the tokens that carry loss.
Prompt and response are tokenised together, as at inference: no boundary mismatch.

Over-long examples (more than ``max_length`` tokens):

- ``truncate`` keeps the first ``max_length - 1`` tokens and appends EOS (labelled), so the model still
  learns to stop; an example whose cut leaves no response token before the EOS is dropped instead
  (``prompt_too_long``), since it would only teach the model to stop inside a prompt;
- ``drop`` drops it (``too_long``).
"""

from __future__ import annotations

from typing import Any, Literal

from lightning_selfalign.jsonl import fingerprint

Overflow = Literal["truncate", "drop"]

KEPT, TRUNCATED, DROPPED_TOO_LONG, DROPPED_PROMPT_TOO_LONG = 0, 1, 2, 3
STATUS_NAMES = {KEPT: "kept", TRUNCATED: "truncated", DROPPED_TOO_LONG: "too_long",
                DROPPED_PROMPT_TOO_LONG: "prompt_too_long"}  # fmt: skip


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model folder or Hub name, with a pad id and the project's chat template."""
    from transformers import AutoTokenizer

    from lightning_selfalign.chat_template import install_chat_template
    from lightning_selfalign.errors import UserError

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"--model.model_name_or_path {name_or_path!r}: cannot load its tokenizer "
            f"({' '.join(str(exc).split())[:300]})"
        ) from None
    install_chat_template(tokenizer)
    if tokenizer.eos_token_id is None:
        raise UserError(f"--data.tokenizer {name_or_path}: the tokenizer has no EOS token; training needs one")
    return tokenizer


def pad_id_of(tokenizer: Any) -> int:
    """Padding id: the tokenizer's own, else EOS (padding never carries loss, so its id does not matter)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Digest of everything about the tokenizer that changes the token ids we cache."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return fingerprint([
        backend.to_str() if backend is not None else tokenizer.name_or_path,
        tokenizer.chat_template, tokenizer.eos_token_id, tokenizer.bos_token_id,
    ])  # fmt: skip


def ends_at_last_label(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    """The tokens up to the last one carrying loss: the published template goes on after the response's EOS
    (``\\n\\n### Response\\n``), which the reference never trained on and which no label reads."""
    last = max((index for index, labelled in enumerate(mask) if labelled), default=len(ids) - 1)
    return ids[: last + 1], mask[: last + 1]


class ChatTokenizer:
    """Batched ``datasets.map`` function: ``messages`` -> ``input_ids``, ``label_mask``, lengths, status.

    A class rather than a closure so that ``map(num_proc=N)`` can pickle it to worker processes.
    """

    def __init__(self, tokenizer: Any, max_length: int, overflow: Overflow) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.overflow = overflow

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        encoded = self.tokenizer.apply_chat_template(
            batch["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        out: dict[str, list[Any]] = {"input_ids": [], "label_mask": [], "length": [], "num_labels": [], "status": []}
        for ids, mask in zip(encoded["input_ids"], encoded["assistant_masks"]):
            ids, mask = ends_at_last_label(list(ids), list(mask))
            ids, mask, status = self._fit(ids, mask)
            if ids:
                mask[0] = 0  # the first token of an example has no context to be predicted from
            out["input_ids"].append(ids)
            out["label_mask"].append(mask)
            out["length"].append(len(ids))
            out["num_labels"].append(sum(mask))
            out["status"].append(status)
        return out

    def _fit(self, ids: list[int], mask: list[int]) -> tuple[list[int], list[int], int]:
        """Apply the over-length policy; dropped examples keep no tokens."""
        if len(ids) <= self.max_length:
            return ids, mask, KEPT
        if self.overflow == "drop":
            return [], [], DROPPED_TOO_LONG
        cut = self.max_length - 1
        if not any(mask[1:cut]):
            return [], [], DROPPED_PROMPT_TOO_LONG
        return ids[:cut] + [self.tokenizer.eos_token_id], mask[:cut] + [1], TRUNCATED
