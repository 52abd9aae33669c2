"""The ``selfalign`` console script.

``fit`` and ``validate`` go to LightningCLI (model + data + trainer from composable YAML). Every other
command is a plain function whose typed signature and docstring are its options and ``--help``
(jsonargparse builds the parser from them), so each stage can also be called from Python.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Sequence

from lightning_selfalign.errors import UserError

# command -> "module:function"; imported lazily so `selfalign seeds` never pays for torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("lightning_selfalign.export:export_command", "Hugging Face folder (and Hub upload) from a checkpoint"),
    "tiny-model": ("lightning_selfalign.tiny:build_tiny_model", "a tiny StarCoder2 model, random or pretrained"),
    "toyworld": ("lightning_selfalign.toyworld.world:toyworld_command", "write the CPU code world's files"),
    "seeds": ("lightning_selfalign.seeds:mine_seeds_command", "mine seed functions from a code corpus"),
    "generate": ("lightning_selfalign.stages:generate_command", "one stage: concepts|instructions|responses"),
    "execute": ("lightning_selfalign.sandbox.batch:execute_command", "execution filter: run code + tests sandboxed"),
    "peer-check": ("lightning_selfalign.sandbox.peers:peer_check_command", "passing code vs its siblings' tests"),
    "curate": ("lightning_selfalign.curation:curate_command", "sanitize, select, dedup, decontaminate"),
    "evaluate": ("lightning_selfalign.evaluation:evaluate_command", "HumanEval(+)/MBPP(+) pass@k"),
    "self-align": ("lightning_selfalign.rounds:self_align_command", "the whole multi-round loop"),
    "serve": ("lightning_selfalign.serve:serve", "small OpenAI-compatible server over the transformers engine"),
    "report": ("lightning_selfalign.report:report_command", "report.html + plots of self-align runs"),
}
LIGHTNING_COMMANDS = {
    "fit": "train (LightningCLI): selfalign fit --config configs/tiny-cpu.yaml",
    "validate": "validate (LightningCLI): selfalign validate --config X.yaml --ckpt_path C",
}


def _usage() -> str:
    lines = ["usage: selfalign COMMAND [options]   (selfalign COMMAND --help for each option)", "", "commands:"]
    for name, text in LIGHTNING_COMMANDS.items():
        lines.append(f"  {name:<12} {text}")
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<12} {text}")
    return "\n".join(lines)


def _load(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def run_command(command: str, args: Sequence[str]) -> object:
    """Run one non-Lightning command with its argument list (as after ``selfalign COMMAND``)."""
    from jsonargparse import CLI, ArgumentError

    function = _load(COMMANDS[command][0])
    args = single_values_as_lists(function, args)
    try:
        return CLI(function, args=list(args), prog=f"selfalign {command}", as_positional=False, exit_on_error=False)
    except ArgumentError as exc:
        raise UserError(argument_error_line(exc, command)) from None


def list_options(function: Callable) -> set[str]:
    """Names of ``function``'s parameters that take a list."""
    import typing

    names = set()
    for name, hint in typing.get_type_hints(function).items():
        kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(kind) is list for kind in kinds):
            names.add(name)
    return names


def single_values_as_lists(function: Callable, args: Sequence[str]) -> list[str]:
    """``--ks 1`` (or ``--ks=1``) for a list option becomes ``--ks+ 1``, so one value needs no brackets and a
    repeated flag collects its values; ``--ks '[1, 10]'`` is left as it is."""
    names, out, pending = list_options(function), [], False
    for arg in args:
        if pending and not arg.lstrip().startswith("["):
            out[-1] += "+"
        pending = False
        flag, equals, value = arg.partition("=")
        if flag.startswith("--") and flag[2:] in names:
            if not equals:
                pending = True
            elif not value.lstrip().startswith("["):
                arg = f"{flag}+={value}"
        out.append(arg)
    return out


def argument_error_line(exc: Exception, command: str) -> str:
    """argparse's complaint on one line, pointing at ``--help`` instead of dumping the usage."""
    return f"{' '.join(str(exc).split())} (see: selfalign {command} --help)"


def quiet_library_chatter() -> None:
    """Warnings as one ``warning:`` line each, without the library source path that Python prints above the
    progress bars; Lightning's advertising tip and its notice that TensorBoard is not installed are dropped (the
    ``tensorboard`` extra is in the README; the logs go to CSV without it, and ``fit done:`` says where)."""
    import logging
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 (warnings' hook)
        (file or sys.stderr).write(f"warning: {message}\n")

    warnings.showwarning = show  # not formatwarning: Lightning replaces that one when it is imported
    warnings.filterwarnings("ignore", message=r".*`tensorboardX` has been removed as a dependency.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    quiet_library_chatter()
    try:
        if command in LIGHTNING_COMMANDS:
            from lightning_selfalign.training_cli import run_lightning_cli

            run_lightning_cli([command, *rest])
        elif command in COMMANDS:
            run_command(command, rest)
        else:
            print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
            sys.exit(2)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
