"""Hugging Face folder from a Lightning checkpoint, with a model card, and the upload to the Hub.

The folder holds safetensors weights, the config (dropout 0, as trained), the tokenizer with the
StarCoder2-Instruct chat template, a generation config that stops at EOS, and a README stating the base model,
data, recipe and metrics. ``AutoModelForCausalLM.from_pretrained`` and vLLM load it as they load any model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lightning_selfalign.adapters import is_adapted, merge_adapters, settings_of, split_state, write_adapter
from lightning_selfalign.chat_template import install_chat_template
from lightning_selfalign.errors import UserError
from lightning_selfalign.model import zero_dropout_config

RECIPE_KEYS = (
    "optimizer",
    "learning_rate",
    "weight_decay",
    "warmup_ratio",
    "lr_schedule",
    "loss_normalization",
    "attn_implementation",
    "gradient_checkpointing",
    "peft",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
)


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """Load a single-file Lightning checkpoint (our own file: full unpickling is intended)."""
    path = Path(ckpt_path)
    if path.is_dir():
        raise UserError(
            f"--ckpt_path {path} is a sharded checkpoint folder: consolidate it first "
            "(FSDP: python -m lightning.fabric.utilities.consolidate_checkpoint PATH; DeepSpeed: "
            "lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict)"
        )
    if not path.is_file():
        raise UserError(f"--ckpt_path {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"--ckpt_path {path}: not a readable Lightning checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"--ckpt_path {path}: not a Lightning checkpoint")
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise UserError(f"--ckpt_path {path}: not a selfalign Lightning checkpoint (no state_dict/hyper_parameters)")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """The trained transformers model, built on the meta device and filled with the checkpoint's tensors (a LoRA
    checkpoint's adapters merged into the base model it names)."""
    hparams = checkpoint["hyper_parameters"]
    state = model_state(checkpoint)
    if is_adapted(state):
        _, adapters = split_state(state)
        state = merge_adapters(base_weights(hparams, next(iter(adapters.values())).dtype), adapters,
                               settings_of(hparams).scaling)  # fmt: skip
    return model_from_state(hparams, state)


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The transformers model's tensors in a SelfAlignLM checkpoint (its ``model.`` prefix removed)."""
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def base_weights(hparams: dict[str, Any], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The frozen base model's weights, from the folder or Hub name training started from."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        hparams["model_name_or_path"], dtype=dtype, trust_remote_code=hparams.get("trust_remote_code", False)
    )
    return base.state_dict()


def model_from_state(hparams: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A transformers model of ``hparams``'s architecture holding ``state`` (keys as the plain model's)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(
        hparams["model_name_or_path"], trust_remote_code=hparams.get("trust_remote_code", False)
    )
    zero_dropout_config(config)
    dtype = next(iter(state.values())).dtype
    config.dtype = dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, trust_remote_code=hparams.get("trust_remote_code", False)
        )
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k in missing if any(p.is_meta for n, p in model.named_parameters() if n == k)]
    if missing or unexpected:
        raise UserError(
            f"checkpoint does not match {hparams['model_name_or_path']}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def model_card(checkpoint: dict[str, Any], metrics: dict[str, Any]) -> str:
    """README.md for the exported folder: base model, data, recipe, metrics."""
    hparams = checkpoint["hyper_parameters"]
    data = checkpoint.get("datamodule_hyper_parameters", {})
    recipe = {k: hparams[k] for k in RECIPE_KEYS if k in hparams}
    recipe.update({k: data[k] for k in ("max_length", "packing", "batch_size", "overflow") if k in data})
    lines = [
        "---",
        "library_name: transformers",
        "tags: [code, lightning-selfalign, self-alignment]",
        f"base_model: {hparams['model_name_or_path']}",
        "---",
        "",
        f"# Self-aligned {Path(str(hparams['model_name_or_path'])).name}",
        "",
        "Fine-tuned with lightning-selfalign on the instruction/response pairs listed below (in a self-alignment",
        "run: pairs the model wrote itself whose own tests passed in a sandbox).",
        "",
        f"- **Base model:** `{hparams['model_name_or_path']}`",
        f"- **Training data:** {data.get('train_files', 'unknown')}",
        f"- **Epochs / steps:** {checkpoint.get('epoch', '?')} / {checkpoint.get('global_step', '?')}",
        "- **Prompt format:** StarCoder2-Instruct (`### Instruction` / `### Response`), saved as the chat template.",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(recipe, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += [f"| {k} | {v} |" for k, v in [("metric", "value"), ("---", "---"), *sorted(metrics.items())]]
    else:
        lines.append("No evaluation recorded with this export (run `selfalign evaluate`).")
    return "\n".join(lines) + "\n"


def checkpoint_metrics(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Validation metrics saved by SelfAlignLM, and best monitored scores of ModelCheckpoint callbacks."""
    metrics = dict(checkpoint.get("selfalign_metrics", {}))
    for name, state in checkpoint.get("callbacks", {}).items():
        if isinstance(state, dict) and state.get("monitor") and state.get("best_model_score") is not None:
            metrics[state["monitor"]] = float(state["best_model_score"])
    return metrics


def export_checkpoint(ckpt_path: str | Path, output_dir: str | Path, metrics: dict[str, Any] | None = None,
                      merge: bool = True) -> Path:  # fmt: skip
    """Write the Hugging Face folder for ``ckpt_path`` into ``output_dir``; returns the folder. A LoRA
    checkpoint's adapters are merged into the base weights, or written in peft's layout with ``merge=False``."""
    checkpoint = read_checkpoint(ckpt_path)
    state = model_state(checkpoint)
    if not merge and is_adapted(state):
        return write_adapter_folder(split_state(state)[1], checkpoint, output_dir, metrics)
    return write_model_folder(model_from_checkpoint(checkpoint), checkpoint, output_dir, metrics)


def export_module(module: Any, output_dir: str | Path, metrics: dict[str, Any] | None = None,
                  merge: bool = True) -> Path | None:  # fmt: skip
    """Write the Hugging Face folder for a live ``SelfAlignLM`` into ``output_dir``; the rounds callback calls this
    between rounds, so no checkpoint has to be written and read back first. Every rank calls it: under FSDP and
    DeepSpeed ZeRO-3 the weights are gathered from all ranks (:func:`full_model_state`). Rank 0 writes and gets the
    folder; the other ranks get None."""
    assert module.model is not None, "configure_model() builds the network before it can be exported"
    state = full_model_state(module)
    if state is None:
        return None
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    summary = {
        "hyper_parameters": dict(module.hparams),
        "datamodule_hyper_parameters": dict(datamodule.hparams) if datamodule is not None else {},
        "epoch": trainer.current_epoch if trainer is not None else "?",
        "global_step": trainer.global_step if trainer is not None else "?",
    }
    hparams = summary["hyper_parameters"]
    if hparams.get("peft", "none") == "none":
        return write_model_folder(model_from_state(hparams, state), summary, output_dir, metrics)
    base, adapters = split_state(state)
    if not merge:
        return write_adapter_folder(adapters, summary, output_dir, metrics)
    if hparams["peft"] == "qlora":  # the live base is 4-bit: merge into the full-precision one it came from
        base = base_weights(hparams, next(iter(adapters.values())).dtype)
    merged = merge_adapters(base, adapters, settings_of(hparams).scaling)
    return write_model_folder(model_from_state(hparams, merged), summary, output_dir, metrics)


def full_model_state(module: Any) -> dict[str, torch.Tensor] | None:
    """The transformers model's full weights in a live ``SelfAlignLM`` (keys as the plain model's, mapped by
    :func:`model_state`) on rank 0; None on the other ranks.

    Under FSDP and DeepSpeed ZeRO-3 each rank holds a shard: they are gathered to rank 0's CPU, a collective every
    rank must enter. Otherwise (one device, DDP, ZeRO-1/2) rank 0 has the full weights itself."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    trainer = getattr(module, "_trainer", None)
    strategy = trainer.strategy if trainer is not None else None
    rank = strategy.global_rank if strategy is not None else 0
    if isinstance(strategy, FSDPStrategy):
        state = fsdp_full_state(strategy)
    elif isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        state = {}
        for prefix, owner in zero3_gathered(module, modifier_rank=None):
            if rank == 0:
                state.update({join(prefix, name): tensor.detach().to("cpu", copy=True)
                              for name, tensor in own_tensors(owner)})  # fmt: skip
    else:
        state = module.state_dict() if rank == 0 else {}
    return model_state({"state_dict": state}) if rank == 0 else None


def load_full_model_state(module: Any, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy full weights (keys as the plain model's) into a live ``SelfAlignLM``'s model, whatever the strategy
    shards; returns the missing and unexpected keys. Every rank calls it with the same ``state`` (under FSDP and
    ZeRO-3 it is a collective)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    trainer = getattr(module, "_trainer", None)
    strategy = trainer.strategy if trainer is not None else None
    if isinstance(strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
        with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, config):
            missing, unexpected = strategy.model.load_state_dict({f"model.{k}": v for k, v in state.items()},
                                                                 strict=False)  # fmt: skip
    elif isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        missing, unexpected = zero3_load(module, {f"model.{k}": v for k, v in state.items()}, strategy.global_rank)
    else:
        return module.model.load_state_dict(state, strict=False)
    return [k.removeprefix("model.") for k in missing], [k.removeprefix("model.") for k in unexpected]


def zero3_load(module: torch.nn.Module, state: dict[str, torch.Tensor], rank: int) -> tuple[list[str], list[str]]:
    """Rank 0 copies ``state`` (the module's own keys) into the gathered parameters; leaving each module's gather
    partitions them to every rank again. Buffers, never partitioned, every rank copies. Returns the missing and
    unexpected keys."""
    seen = set()
    for prefix, owner in zero3_gathered(module, modifier_rank=0):
        for name, tensor in own_tensors(owner):
            key = join(prefix, name)
            seen.add(key)
            if key in state and (rank == 0 or not isinstance(tensor, torch.nn.Parameter)):
                tensor.data.copy_(state[key])
    return sorted(seen - state.keys()), sorted(state.keys() - seen)


def fsdp_full_state(strategy: Any) -> dict[str, torch.Tensor]:
    """FSDP's full state dict of the Lightning module on rank 0 (empty on the others), gathered layer by layer.

    What ``FSDPStrategy.lightning_module_state_dict()`` does with ``state_dict_type="full"``, but for any
    ``state_dict_type`` (a sharded-checkpoint run still exports full weights) and offloading to CPU only from an
    accelerator: on CPU, torch's offload frees the gathered weights before they are read (a segfault in torch 2.13)."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    config = FullStateDictConfig(offload_to_cpu=strategy.root_device.type != "cpu", rank0_only=True)
    with FSDP.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, config):
        return strategy.model.state_dict()


def zero3_gathered(root: torch.nn.Module, modifier_rank: int | None) -> Iterator[tuple[str, torch.nn.Module]]:
    """Each submodule of ``root`` with its own ZeRO-3 partitioned parameters gathered while the caller looks at it,
    one module at a time (how Lightning's ``DeepSpeedStrategy`` loads full weights). With ``modifier_rank`` that
    rank's changes are partitioned back to every rank. Every rank must walk it."""
    import deepspeed  # the optional extra: only a ZeRO-3 run gets here

    for prefix, module in root.named_modules():
        with deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=modifier_rank):
            yield prefix, module


def own_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """A module's own parameters and the buffers it saves in a state dict (not its submodules')."""
    yield from module.named_parameters(recurse=False)
    yield from ((name, buffer) for name, buffer in module.named_buffers(recurse=False)
                if name not in module._non_persistent_buffers_set)  # fmt: skip


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def write_model_folder(
    model: torch.nn.Module, checkpoint: dict[str, Any], output_dir: str | Path, metrics: dict[str, Any] | None = None
) -> Path:
    """Weights, tokenizer with the chat template, generation config and model card; ``checkpoint`` needs
    ``hyper_parameters`` (and may carry the datamodule's, epoch, global step and callback scores for the card)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, safe_serialization=True)
    write_folder_extras(checkpoint, output, metrics)
    return output


def write_adapter_folder(adapters: dict[str, torch.Tensor], checkpoint: dict[str, Any], output_dir: str | Path,
                         metrics: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """The LoRA adapter in peft's layout (``PeftModel.from_pretrained``, vLLM's ``LoRARequest``) with the same
    tokenizer, generation config and card as a full export."""
    hparams = checkpoint["hyper_parameters"]
    output = Path(output_dir)
    write_adapter(adapters, settings_of(hparams), str(hparams["model_name_or_path"]), output)
    write_folder_extras(checkpoint, output, metrics)
    return output


def write_folder_extras(checkpoint: dict[str, Any], output: Path, metrics: dict[str, Any] | None) -> None:
    """Tokenizer with the chat template, generation config and model card."""
    from transformers import AutoTokenizer, GenerationConfig

    hparams = checkpoint["hyper_parameters"]
    tokenizer = AutoTokenizer.from_pretrained(
        hparams["model_name_or_path"], trust_remote_code=hparams.get("trust_remote_code", False)
    )
    install_chat_template(tokenizer, overwrite=True)
    tokenizer.save_pretrained(output)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        max_new_tokens=1024,
        do_sample=False,
    ).save_pretrained(output)
    all_metrics = checkpoint_metrics(checkpoint) | (metrics or {})
    (output / "README.md").write_text(model_card(checkpoint, all_metrics), encoding="utf-8")


def upload_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub; needs a token (``hf auth login`` or ``HF_TOKEN``)."""
    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise UserError(
            f"--push_to_hub {repo_id}: no Hugging Face token found; run `hf auth login` or set HF_TOKEN "
            "(the folder was still written)"
        )
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload from lightning-selfalign")
    return str(info)


def export_command(
    ckpt_path: str,
    output_dir: str,
    push_to_hub: str | None = None,
    private: bool = False,
    metrics_file: str | None = None,
    merge: bool = True,
) -> None:
    """Export a ``selfalign fit`` checkpoint as a Hugging Face model folder, optionally pushing it to the Hub.

    Args:
        ckpt_path: Lightning checkpoint (``.ckpt`` file, e.g. ``.../checkpoints/last.ckpt``).
        output_dir: Folder to write (safetensors, config, tokenizer + chat template, generation config, README).
        push_to_hub: Hub repository id (``user/name``) to upload the folder to.
        private: Create the Hub repository as private.
        metrics_file: JSON of evaluation results (e.g. from ``selfalign evaluate``) to put in the model card.
        merge: for a LoRA/QLoRA checkpoint: merge the adapters into the base weights (a plain model folder), or
            write the adapter alone in peft's layout (``--merge false``).
    """
    metrics = {}
    if metrics_file:
        try:
            metrics = json.loads(Path(metrics_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"--metrics_file {metrics_file}: {exc}") from None
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file; name a folder")
    folder = export_checkpoint(ckpt_path, output_dir, metrics, merge=merge)
    print(f"exported {ckpt_path} -> {folder}")
    if push_to_hub:
        print(f"pushed: {upload_to_hub(folder, push_to_hub, private=private)}")
