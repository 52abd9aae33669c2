"""A tiny StarCoder2-architecture model with random weights, built offline, for tests and the CPU demo.

The tokenizer is a byte-level BPE trained on the running interpreter's standard library (real Python
source, no download). Everything is saved as an ordinary Hugging Face folder, so it loads through exactly
the code path that loads ``bigcode/starcoder2-15b``: ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

from lightning_selfalign.chat_template import install_chat_template

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


def build_tokenizer(vocab_size: int = 4096, corpus_files: int = 120, seed: int = 0):
    """Byte-level BPE trained on standard-library source, with StarCoder2's special tokens and our chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_stdlib_sources(corpus_files, seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=4096
    )
    install_chat_template(tokenizer)
    return tokenizer


def build_tiny_model(
    output_dir: str = "tiny-model",
    vocab_size: int = 4096,
    hidden_size: int = 192,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 768,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Build and save the tiny random StarCoder2 model and its tokenizer (no network; ~2.4M parameters).

    Args:
        output_dir: Folder to write (a normal Hugging Face model folder).
        vocab_size: BPE vocabulary size, trained on the local standard library.
        hidden_size: Model width.
        num_layers: Transformer layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention, as in StarCoder2).
        intermediate_size: MLP width.
        max_position_embeddings: Longest sequence.
        seed: Seed for the tokenizer corpus sample and the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, Starcoder2Config

    output = Path(output_dir)
    tokenizer = build_tokenizer(vocab_size=vocab_size, seed=seed)
    config = Starcoder2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # StarCoder2-15B ships with dropout 0.1 everywhere; keep it so "dropout off" is really exercised.
        residual_dropout=0.1,
        embedding_dropout=0.1,
        attention_dropout=0.1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    print(f"tiny model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters -> {output}")
    return output
