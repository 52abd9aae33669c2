"""LoRA through peft: only the adapters train, checkpoints hold the adapters and resume exactly, and both exports
(merged weights, peft adapter) give the module's logits. QLoRA's 4-bit path needs CUDA and bitsandbytes."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import fit_args, logged, write_sft

from lightning_selfalign.errors import UserError
from lightning_selfalign.training_cli import run_lightning_cli

pytest.importorskip("peft", reason="LoRA needs peft: pip install 'lightning-selfalign[lora]'")

LORA = ["--model.peft", "lora", "--model.lora_rank", "4", "--model.lora_alpha", "8", "--model.learning_rate", "1e-2",
        "--model.optimizer", "adamw", "--data.max_length", "128", "--data.batch_size", "2",
        "--trainer.accumulate_grad_batches", "1"]  # fmt: skip


def _checkpointing(tmp_path, every: int, stop_at: int | None = None) -> list[str]:
    overlay = tmp_path / f"ckpt-{every}-{stop_at}.yaml"
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": every}}]  # fmt: skip
    if stop_at is not None:
        callbacks.append({"class_path": "pause_callback.StopAt", "init_args": {"step": stop_at}})
    overlay.write_text(json.dumps({"trainer": {"callbacks": callbacks}}), encoding="utf-8")
    return ["--config", str(overlay)]


@pytest.mark.timeout(600)
def test_lora_trains_only_the_adapters_and_resumes_exactly(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_sft(tmp_path / "sft.jsonl", 64)
    cli = run_lightning_cli(fit_args(tiny_model_dir, data, tmp_path / "full", *LORA, "--trainer.max_steps", "30",
                                      *_checkpointing(tmp_path, 10)))  # fmt: skip
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    trained = cli.model.model.state_dict()
    adapters = {k: v for k, v in trained.items() if ".lora_" in k}
    assert adapters and all(not v.requires_grad or ".lora_" in k for k, v in cli.model.model.named_parameters())
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if ".lora_B." in k), "B starts at 0: it must move"
    for key, value in trained.items():
        if ".lora_" not in key:
            plain = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
            assert torch.equal(value, base[plain]), f"frozen base weight changed: {key}"
    checkpoint = torch.load(next((tmp_path / "full").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["state_dict"] and all(".lora_" in k for k in checkpoint["state_dict"]), "adapters only"

    straight = logged(tmp_path / "full")
    assert len(straight) == 30
    # Stop at step 20 (its checkpoint), then resume to 30: the same losses as the uninterrupted run.
    half = tmp_path / "half"
    run_lightning_cli(fit_args(tiny_model_dir, data, half, *LORA, "--trainer.max_steps", "30",
                                *_checkpointing(tmp_path, 10, stop_at=20)))  # fmt: skip
    before = logged(half)
    assert len(before) == 20
    run_lightning_cli(fit_args(tiny_model_dir, data, half, *LORA, "--trainer.max_steps", "30",
                                *_checkpointing(tmp_path, 10), "--ckpt_path", "last"))  # fmt: skip
    assert logged(half)[20:] == pytest.approx(straight[20:], rel=1e-6, abs=1e-7)


@pytest.mark.timeout(600)
def test_lora_exports_merged_weights_and_the_adapter_with_the_modules_logits(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lightning_selfalign.export import export_checkpoint, export_module

    data = write_sft(tmp_path / "sft.jsonl", 32)
    cli = run_lightning_cli(fit_args(tiny_model_dir, data, tmp_path / "run", *LORA, "--trainer.max_steps", "10",
                                      *_checkpointing(tmp_path, 10)))  # fmt: skip
    module = cli.model.model.eval()
    ids = torch.randint(1, 4000, (2, 24))
    with torch.no_grad():
        expected = module(ids).logits
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    for name, folder in (("checkpoint", export_checkpoint(checkpoint, tmp_path / "merged")),
                         ("live module", export_module(cli.model, tmp_path / "merged-live"))):  # fmt: skip
        merged = AutoModelForCausalLM.from_pretrained(folder).eval()
        assert not any(".lora_" in k for k in merged.state_dict()), name
        with torch.no_grad():
            assert torch.allclose(merged(ids).logits, expected, atol=1e-5), name
    adapter = export_checkpoint(checkpoint, tmp_path / "adapter", merge=False)
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    assert not (adapter / "model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)


def test_lora_settings_are_checked_and_qlora_needs_a_gpu(tiny_model_dir):
    from lightning_selfalign.model import SelfAlignLM

    with pytest.raises(UserError, match="--model.lora_rank must be >= 1"):
        SelfAlignLM(str(tiny_model_dir), peft="lora", lora_rank=0)
    if not torch.cuda.is_available():
        module = SelfAlignLM(str(tiny_model_dir), peft="qlora")
        with pytest.raises(UserError, match="qlora needs a CUDA GPU"):
            module.configure_model()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA's 4-bit base needs a CUDA GPU and bitsandbytes")
def test_qlora_trains_adapters_on_a_4bit_base(tiny_model_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    data = write_sft(tmp_path / "sft.jsonl", 32)
    qlora = [arg if arg != "lora" else "qlora" for arg in LORA]
    cli = run_lightning_cli(fit_args(tiny_model_dir, data, tmp_path / "run", *qlora, "--trainer.max_steps", "5",
                                      "--trainer.accelerator", "gpu", "--trainer.precision", "bf16-true"))  # fmt: skip
    assert any("4bit" in type(m).__name__ for m in cli.model.model.modules())
