"""A tiny StarCoder2-architecture model with random weights, built offline, for tests and the CPU demo.

The tokenizer is a byte-level BPE trained on the running interpreter's standard library (real Python
source, no download). Everything is saved as an ordinary Hugging Face folder, so it loads through exactly
the code path that loads ``bigcode/starcoder2-15b``: ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path
from typing import Literal

from lightning_selfalign.chat_template import install_chat_template
from lightning_selfalign.errors import UserError

EOS = "<|endoftext|>"


def _stdlib_sources(limit: int, seed: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    random.Random(seed).shuffle(files)
    texts = []
    for path in files[:limit]:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return texts


def build_tokenizer(vocab_size: int = 4096, corpus_files: int = 120, seed: int = 0, texts: list[str] | None = None):
    """Byte-level BPE trained on ``texts`` (default: standard-library source), with StarCoder2's special tokens
    and our chat template.

    With ``texts``, a newline is always a token of its own: byte-level BPE otherwise merges it with the next line's
    indentation, so a prompt ending in a newline (every HumanEval-style prompt) ends on a token that, in training,
    only ever came before unindented text, and a small model continues with anything but a function body."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if texts is not None:
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts if texts is not None else _stdlib_sources(corpus_files, seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=4096
    )
    install_chat_template(tokenizer)
    return tokenizer


def tiny_config(
    tokenizer,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    dropout: float,
):
    """A small StarCoder2 configuration sized to ``tokenizer``."""
    from transformers import Starcoder2Config

    return Starcoder2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, residual_dropout=dropout, embedding_dropout=dropout,
        attention_dropout=dropout, tie_word_embeddings=True,
    )  # fmt: skip


def build_tiny_model(
    output_dir: str = "tiny-model",
    pretrain: Literal["none", "toyworld"] = "none",
    vocab_size: int | None = None,
    hidden_size: int = 192,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 768,
    max_position_embeddings: int = 4096,
    pretrain_steps: int = 800,
    pretrain_batch: int = 16,
    pretrain_long_code: float = 1.0,
    pretrain_stop_at: int | None = None,
    pretrain_slip: float = 0.0,
    seed: int = 0,
) -> Path:
    """Build and save a tiny StarCoder2 model and its tokenizer, offline: random weights (~2.4M parameters), or
    pretrained from scratch on the generated code world (``--pretrain toyworld``; the committed base model is
    ``scripts/build_toyworld_model.sh``: 128 wide, 800 steps, ~13 minutes on 2 CPU cores).

    Args:
        output_dir: Folder to write (a normal Hugging Face model folder).
        pretrain: ``none``: random weights, tokenizer trained on the local standard library (tests, the fit demo);
            ``toyworld``: tokenizer and weights trained on the code world's pretraining corpus (the self-align demo's
            base model; see lightning_selfalign.toyworld).
        vocab_size: BPE vocabulary size (default 4096, or 2048 for toyworld).
        hidden_size: Model width.
        num_layers: Transformer layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention, as in StarCoder2).
        intermediate_size: MLP width.
        max_position_embeddings: Longest sequence.
        pretrain_steps: Optimizer steps of toyworld pretraining.
        pretrain_batch: Blocks of 512 tokens in each pretraining step. For a fixed budget of tokens, smaller
            batches (more steps) teach this small model to copy a constant from the docstring sooner.
        pretrain_long_code: Share (0-1) of the corpus's four-step tasks the base sees written as code; the others
            give only their instruction document (0: the base has never written a four-step chain).
        pretrain_stop_at: Stop after this many of ``--pretrain_steps``' steps, keeping that run's schedule: the
            run's checkpoint at that step (default: all of them). A run that learns to copy passes through the
            benchmark's window just before it does, and a checkpoint there learns from right rows fast.
        pretrain_slip: Share (0-1) of the corpus's tasks whose code is written with a slip: each add, subtract,
            multiply, add-to-each, multiply-each and append step one constant too high, under a docstring that
            states the right one; the tests in its documents stay right (``toyworld.documents.written_code``).
        seed: Seed for the tokenizer corpus, the weights, the code world and the pretraining order.
    """
    import torch
    from transformers import AutoModelForCausalLM

    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output_dir {output} is a file; name a folder")
    if not 0.0 <= pretrain_long_code <= 1.0:
        raise UserError(f"--pretrain_long_code is a share (0 to 1) of four-step tasks, not {pretrain_long_code}")
    if not 0.0 <= pretrain_slip <= 1.0:
        raise UserError(f"--pretrain_slip is a share (0 to 1) of the corpus's tasks, not {pretrain_slip}")
    if pretrain_stop_at is not None and not 1 <= pretrain_stop_at <= pretrain_steps:
        raise UserError(f"--pretrain_stop_at {pretrain_stop_at}: a step from 1 to --pretrain_steps {pretrain_steps}")
    documents = None
    if pretrain == "toyworld":
        from lightning_selfalign.toyworld import build_world, pretraining_documents

        documents = pretraining_documents(build_world(seed), seed=seed, long_code=pretrain_long_code,
                                          slip=pretrain_slip)  # fmt: skip
    tokenizer = build_tokenizer(vocab_size=vocab_size or (2048 if documents else 4096), seed=seed, texts=documents)
    # StarCoder2-15B ships with dropout 0.1 everywhere; the random model keeps it so "dropout off" is exercised.
    config = tiny_config(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
                         max_position_embeddings, dropout=0.0 if documents else 0.1)  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if documents is not None:
        from lightning_selfalign.toyworld.pretrain import pretrain_model

        recipe = {"long_code": pretrain_long_code, "slip": pretrain_slip}
        pretrain_model(model, tokenizer, documents, output, pretrain_steps, seed, batch=pretrain_batch, recipe=recipe,
                       stop_at=pretrain_stop_at)  # fmt: skip
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    print(f"tiny model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters -> {output}")
    return output
