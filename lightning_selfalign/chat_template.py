"""The StarCoder2-Instruct prompt format, defined once, as a Jinja chat template.

The template is the one StarCoder2-15B-Instruct-v0.1 ships (the reference's ``prompt_template.py``), so vLLM and
``transformers`` render exported models exactly as the reference's do::

    <bos>{SYSTEM}\n\n### Instruction\n{instruction}\n\n### Response\n{response}<eos>\n\n### Response\n

Each user turn is ``### Instruction\n{content}\n\n``; each assistant turn ``### Response\n{content}<eos>\n\n``;
and ``### Response\n`` always ends the text, asked for or not (``add_generation_prompt`` changes nothing).

Training sees what the reference trained on: the text up to and including the response's EOS (``render_text``),
i.e. the template's rendering cut after the last assistant token. The assistant part (response + EOS) sits
inside ``{% generation %}`` so that ``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly
the tokens that carry loss: prompt and response are tokenised in one pass, so there is no boundary mismatch
with inference.
"""

from __future__ import annotations

from typing import Any

SYSTEM = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate and reliable "
    "responses to user instructions."
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{{ '" + SYSTEM + "\\n\\n' }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{{ '### Instruction\\n' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{ '### Response\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n\\n' }}"
    "{%- else %}"
    "{{ raise_exception('the StarCoder2-Instruct format has only user and assistant turns, got ' + message['role']) }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{{ '### Response\\n' }}"
)


def render_text(instruction: str, response: str | None, bos: str, eos: str) -> str:
    """One example as the reference trains on it (the template's output cut after the response's EOS), or, with
    ``response=None``, the prompt the model answers; tests pin the Jinja template to it."""
    text = f"{bos}{SYSTEM}\n\n### Instruction\n{instruction}\n\n### Response\n"
    return text if response is None else text + response + eos


def messages_for(instruction: str, response: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one instruction (and its response, for training)."""
    messages = [{"role": "user", "content": instruction}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def install_chat_template(tokenizer: Any, overwrite: bool = False) -> None:
    """Give ``tokenizer`` the StarCoder2-Instruct template (base models ship none)."""
    if overwrite or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
