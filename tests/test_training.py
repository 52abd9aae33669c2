"""Training invariants: recipe parity with transformers' Trainer, per-sample loss, dropout off, exact resume
after SIGKILL, export round trip, one-line config errors, every shipped YAML parses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import fit_args, logged, write_sft

from lightning_selfalign.chat_template import messages_for, render_text
from lightning_selfalign.data.tokenize import ChatTokenizer
from lightning_selfalign.model import SelfAlignLM, active_dropout, load_causal_lm, per_sample_loss, token_losses
from lightning_selfalign.training_cli import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]


def _trainer_examples(model_dir: Path, data: Path) -> list[dict]:
    """Independent tokenisation for the reference: chat template + assistant mask, one pass."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        out = tokenizer.apply_chat_template(
            messages_for(row["instruction"], row["response"]),
            tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        )  # fmt: skip
        ids = list(out["input_ids"])
        labels = [t if m else -100 for t, m in zip(ids, out["assistant_masks"])]
        examples.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
    return examples


@pytest.mark.timeout(600)
@pytest.mark.parametrize("normalization", ["token", "sample"])
def test_recipe_parity_with_transformers_trainer(tiny_model_dir, tmp_path, normalization):
    """token: today's Trainer (num_items_in_batch over the window). sample: the reference's older Trainer,
    which averaged each example's mean token loss over the accumulation steps (batch size 1)."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    steps, accumulate, lr = 30, 4, 1e-3
    data = write_sft(tmp_path / "sft.jsonl", steps * accumulate)
    cli = run_lightning_cli(
        fit_args(tiny_model_dir, data, tmp_path / "ours",
                  "--data.packing", "false", "--data.batch_size", "1", "--data.shuffle", "false",
                  "--trainer.max_steps", str(steps), "--trainer.accumulate_grad_batches", str(accumulate),
                  "--model.learning_rate", str(lr), "--model.loss_normalization", normalization)
    )  # fmt: skip
    ours = cli.model.model.state_dict()
    our_losses = logged(tmp_path / "ours")

    reference = load_causal_lm(str(tiny_model_dir), attn_implementation="eager", dtype=torch.float32)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=1, gradient_accumulation_steps=accumulate,
        max_steps=steps, learning_rate=lr, optim="adafactor", lr_scheduler_type="linear", warmup_steps=0.05,
        max_grad_norm=0.0, weight_decay=0.0, train_sampling_strategy="sequential", logging_steps=1, report_to=[],
        use_cpu=True, save_strategy="no", remove_unused_columns=False, seed=0,
    )  # fmt: skip
    examples = Dataset.from_list(_trainer_examples(tiny_model_dir, data))
    trainer = Trainer(model=reference, args=args, train_dataset=examples)
    if normalization == "sample":
        trainer.model_accepts_loss_kwargs = False  # the model's own mean loss, divided by the accumulation
    trainer.train()
    their_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    theirs = reference.state_dict()
    worst = max(((ours[k] - theirs[k]).norm() / theirs[k].norm().clamp(min=1e-12)).item() for k in theirs)
    assert worst < 1e-4, f"weights differ from transformers.Trainer by {worst:.2e} (relative)"
    assert len(our_losses) == len(their_losses) == steps
    assert our_losses == pytest.approx(their_losses, rel=1e-4)
    assert their_losses[-1] < their_losses[0], "the run should actually train"


def test_per_sample_normalisation_matches_direct_computation(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), attn_implementation="eager", dtype=torch.float32)
    torch.manual_seed(0)
    lengths, prompt = [9, 14, 6], 3
    examples = [torch.randint(1, 4000, (n,)) for n in lengths]
    direct = []
    for ids in examples:
        labels = ids.clone()
        labels[:prompt] = -100
        losses, mask = token_losses(model(ids[None]).logits, labels[None])
        direct.append(losses[mask].mean())
    expected = torch.stack(direct).mean()

    input_ids = torch.cat(examples)[None]
    labels = input_ids.clone()
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    labels[position_ids < prompt] = -100
    from lightning_selfalign.model import packed_attention_mask

    logits = model(input_ids, attention_mask=packed_attention_mask(position_ids, torch.float32),
                   position_ids=position_ids).logits  # fmt: skip
    losses, mask = token_losses(logits, labels)
    assert per_sample_loss(losses, mask, position_ids).item() == pytest.approx(expected.item(), abs=1e-5)

    padded = torch.zeros(3, max(lengths), dtype=torch.long)
    padded_labels = torch.full_like(padded, -100)
    attention = torch.zeros_like(padded)
    for row, ids in enumerate(examples):
        padded[row, : len(ids)] = ids
        padded_labels[row, prompt : len(ids)] = ids[prompt:]
        attention[row, : len(ids)] = 1
    losses, mask = token_losses(model(padded, attention_mask=attention).logits, padded_labels)
    assert per_sample_loss(losses, mask, None).item() == pytest.approx(expected.item(), abs=1e-5)


def test_dropout_is_off_everywhere_in_training_mode(tiny_model_dir):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tiny_model_dir).residual_dropout > 0, "the fixture must ship dropout"
    module = SelfAlignLM(str(tiny_model_dir))
    module.configure_model()
    module.train()
    assert module.model.training
    assert active_dropout(module.model) == []
    ids = torch.randint(1, 4000, (2, 16))
    torch.manual_seed(1)
    first = module({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    torch.manual_seed(2)
    second = module({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert torch.equal(first, second), "training-mode forward passes differ: some dropout is still active"


@pytest.mark.timeout(600)
def test_fit_killed_mid_epoch_resumes_with_identical_losses(tiny_model_dir, tmp_path):
    data = write_sft(tmp_path / "sft.jsonl", 80)
    overlay = tmp_path / "resume.yaml"
    marker = tmp_path / "paused"
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 3},
    }
    pause = {"class_path": "pause_callback.PauseAt", "init_args": {"step": 7, "marker": str(marker)}}
    common = ["--data.max_length", "128", "--data.batch_size", "2", "--trainer.max_steps", "12",
              "--trainer.accumulate_grad_batches", "2"]  # fmt: skip
    overlay.write_text(json.dumps({"trainer": {"callbacks": [checkpoint]}}), encoding="utf-8")
    run_lightning_cli(fit_args(tiny_model_dir, data, tmp_path / "full", *common, "--config", str(overlay)))
    uninterrupted = logged(tmp_path / "full")
    assert len(uninterrupted) == 12

    killed = tmp_path / "killed"
    overlay.write_text(json.dumps({"trainer": {"callbacks": [checkpoint, pause]}}), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    args = fit_args(tiny_model_dir, data, killed, *common, "--config", str(overlay))
    process = subprocess.Popen([sys.executable, "-m", "lightning_selfalign", *args], env=env, cwd=REPO)
    deadline = time.monotonic() + 400
    while not marker.exists():
        assert process.poll() is None, "fit exited before reaching the pause step"
        assert time.monotonic() < deadline, "fit never reached the pause step"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = logged(killed)
    last = next(killed.rglob("last.ckpt"))
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6

    overlay.write_text(json.dumps({"trainer": {"callbacks": [checkpoint]}}), encoding="utf-8")
    # `--ckpt_path last` as a user would type it: the resumed run gets a new log version folder, so this
    # also checks that "last" is found across versions.
    run_lightning_cli(fit_args(tiny_model_dir, data, killed, *common, "--config", str(overlay),
                                "--ckpt_path", "last"))  # fmt: skip
    resumed = logged(killed)[len(before) :]
    assert resumed == pytest.approx(uninterrupted[6:], rel=1e-6, abs=1e-7)


@pytest.mark.timeout(300)
def test_export_round_trip_logits_and_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_selfalign.export import export_checkpoint

    data = write_sft(tmp_path / "sft.jsonl", 16)
    with_validation = ["--data.val_fraction", "0.25", "--trainer.limit_val_batches", "1.0",
                       "--trainer.val_check_interval", "2"]  # fmt: skip
    cli = run_lightning_cli(fit_args(tiny_model_dir, data, tmp_path / "run", "--trainer.max_steps", "2",
                                      "--data.max_length", "128", *with_validation))  # fmt: skip
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    folder = export_checkpoint(checkpoint, tmp_path / "export")
    for name in ("model.safetensors", "config.json", "generation_config.json", "README.md", "tokenizer.json"):
        assert (folder / name).exists(), name
    card = (folder / "README.md").read_text()
    assert str(tiny_model_dir) in card and "adafactor" in card
    assert "val/loss" in card and "val/token_accuracy" in card, "validation metrics belong in the model card"

    exported = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    trained = cli.model.model.eval()
    ids = torch.randint(1, 4000, (2, 24))
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, trained(ids).logits, atol=1e-6)
    assert exported.config.residual_dropout == 0

    tokenizer = AutoTokenizer.from_pretrained(folder)
    row = json.loads(data.read_text().splitlines()[0])
    # The exported template is StarCoder2-Instruct's: eos and a blank line after each answer, "### Response" last.
    trained = render_text(row["instruction"], row["response"], tokenizer.bos_token, tokenizer.eos_token)
    text = tokenizer.apply_chat_template(messages_for(row["instruction"], row["response"]), tokenize=False)
    assert text == trained + "\n\n### Response\n"
    for asked in (True, False):
        prompt = tokenizer.apply_chat_template(messages_for(row["instruction"]), tokenize=False,
                                               add_generation_prompt=asked)  # fmt: skip
        assert prompt == render_text(row["instruction"], None, tokenizer.bos_token, tokenizer.eos_token)
    # What training saw: the same text cut after the response's EOS, as the reference trained.
    encoded = ChatTokenizer(cli.datamodule.tokenizer, max_length=4096, overflow="drop")(
        {"messages": [messages_for(row["instruction"], row["response"])]}
    )
    assert tokenizer(trained, add_special_tokens=False)["input_ids"] == encoded["input_ids"][0]


def test_config_typo_is_one_line_error_naming_the_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_selfalign", "fit", "--config", str(REPO / "configs" / "tiny-cpu.yaml"),
         "--modle.learning_rate", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--modle.learning_rate" in errors[0]
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr


def test_export_without_hub_token_is_a_clear_error(tmp_path, monkeypatch):
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.export import upload_to_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(UserError, match="no Hugging Face token"):
        upload_to_hub(tmp_path, "someone/model")


OVERLAYS = ["fsdp-8gpu.yaml", "deepspeed-zero3-8gpu.yaml", "multinode-4x8.yaml"]


# self-align-*.yaml configure `selfalign self-align`, not fit; tests/test_rounds.py parses those.
FIT_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("self-align"))


@pytest.mark.parametrize("config", FIT_CONFIGS)
def test_every_shipped_config_parses(config, capsys):
    args = ["fit", "--config", str(REPO / "configs" / config), "--print_config"]
    if config in OVERLAYS:
        args[1:1] = ["--config", str(REPO / "configs" / "starcoder2-15b-instruct.yaml")]
    if "multinode" in config:
        args[1:1] = ["--config", str(REPO / "configs" / "starcoder2-15b-instruct.yaml"),
                     "--config", str(REPO / "configs" / "fsdp-8gpu.yaml")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli(args)
    assert exit_info.value.code in (0, None)
    assert "model_name_or_path" in capsys.readouterr().out


def test_reference_recipe_is_exact():
    import yaml

    recipe = yaml.safe_load((REPO / "configs" / "starcoder2-15b-instruct.yaml").read_text())
    model, data, trainer = recipe["model"], recipe["data"], recipe["trainer"]
    assert model["optimizer"] == "adafactor" and model["learning_rate"] == 1e-5
    assert model["warmup_ratio"] == 0.05 and model["lr_schedule"] == "linear"
    assert model["attn_implementation"] == "flash_attention_2"
    assert data["max_length"] == 1280 and data["batch_size"] == 1
    assert trainer["max_epochs"] == 4 and trainer["accumulate_grad_batches"] == 64
    assert trainer["precision"] == "bf16-true" and trainer["gradient_clip_val"] is None


def test_schedule_restarts_per_round_and_survives_a_checkpoint():
    """A round restarts warmup and decay from the current step over its own length; the curve is in the state dict."""
    from lightning_selfalign.optimizers import build_scheduler, restart_schedule, schedule_factor

    def stepped(scheduler, n):
        for _ in range(n):
            scheduler.optimizer.step()
            scheduler.step()

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, total_steps=20, warmup_ratio=0.1, name="linear")
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        stepped(scheduler, 1)
    assert lrs == pytest.approx([0.1 * schedule_factor(s, 20, 2, "linear") for s in range(20)])  # as the closure was
    assert optimizer.param_groups[0]["lr"] == 0.0

    assert restart_schedule(scheduler, total_steps=10)  # round 2 starts at step 20, 10 steps long
    assert optimizer.param_groups[0]["lr"] == 0.0 and scheduler.get_last_lr() == [0.0]  # warmup starts at 0
    stepped(scheduler, 1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # 1 warmup step of 10, then the peak
    stepped(scheduler, 4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 4 / 9))

    resumed_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    resumed = build_scheduler(resumed_optimizer, total_steps=20, warmup_ratio=0.1, name="linear")
    resumed.load_state_dict(scheduler.state_dict())
    stepped(scheduler, 1)
    stepped(resumed, 1)
    assert resumed.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert resumed.lr_lambdas[0].start == 20 and resumed.lr_lambdas[0].total_steps == 10

    other = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 5)
    assert not restart_schedule(other, total_steps=10)


@pytest.mark.parametrize("bar", [True, False])
def test_progress_bar_shows_the_learning_rate_in_scientific_notation(tiny_model_dir, bar):
    from lightning.pytorch.callbacks import RichProgressBar

    from lightning_selfalign.rounds.command import build_cli
    from lightning_selfalign.training_cli import LearningRateBar

    args = ["--config", str(REPO / "configs" / "tiny-cpu.yaml"), f"--model.model_name_or_path={tiny_model_dir}",
            f"--trainer.enable_progress_bar={bar}"]  # fmt: skip
    trainer = build_cli(args, callbacks=[]).trainer
    if not bar:  # switched off: no bar, and no conflict with ours
        assert trainer.progress_bar_callback is None
        return
    assert type(trainer.progress_bar_callback) is LearningRateBar
    trainer._logger_connector._progress_bar_metrics.update({"train/lr": 1e-5, "train/loss": 0.5})
    metrics = trainer.progress_bar_callback.get_metrics(trainer, None)
    assert metrics["train/lr"] == "1.00e-05" and metrics["train/loss"] == 0.5
    given = build_cli([*args, "--trainer.callbacks=RichProgressBar"], callbacks=[]).trainer
    assert type(given.progress_bar_callback) is RichProgressBar  # a bar the user chose stays theirs
