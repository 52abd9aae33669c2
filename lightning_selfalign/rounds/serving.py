"""Served models follow the weights: with ``--generation.engine openai`` a server, not the round, holds the weights
that generate and are evaluated. Before a model generates or is evaluated, :func:`serve_model` makes the server
serve it: if ``/v1/models`` does not already report that model, it runs ``--generation.reload_command`` and waits
until the server reports it (:func:`wait_until_served`), all within ``--generation.reload_timeout``.

A server serves a model when an entry of ``GET /v1/models`` has it as ``root`` (the folder it loaded, as ``vllm
serve``, SGLang and :mod:`lightning_selfalign.serve` report it) or as ``id``, and, when ``--generation.served_model``
is set, that entry's ``id`` is that name (the name every request uses).

The command runs under ``sh -c`` with ``{model_dir}``, ``{base_url}`` and ``{served_model}`` replaced by shell-quoted
values; the environment carries them too (``SELFALIGN_MODEL_DIR``, ``SELFALIGN_BASE_URL``, ``SELFALIGN_SERVED_MODEL``)
for use inside quotes, e.g. a JSON body. Its output goes to a file, not a pipe, so a command that starts a server in
the background returns at once; the wait that follows is what makes sure the new weights answer.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.rounds.settings import GenerationOptions


def serve_model(model: str, options: GenerationOptions, poll_s: float = 0.5) -> None:
    """Make the openai engine's server serve ``model`` (a folder or Hub name); nothing without a reload command."""
    if options.engine != "openai" or not options.reload_command:
        return
    target = model_name(model)
    if serving(options, target):
        return
    started = time.monotonic()
    run_reload_command(options, target)
    if options.reload_wait:
        wait_until_served(options, target, started + options.reload_timeout, poll_s)
    print(f"self-align: {options.base_url} serves {target} ({time.monotonic() - started:.0f} s)", file=sys.stderr)


def model_name(model: str) -> str:
    """A local folder as an absolute path (the server may run elsewhere in the tree); a Hub name as given."""
    return str(Path(model).resolve()) if Path(model).exists() else model


def served_models(options: GenerationOptions, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The server's ``/v1/models`` entries; ``OSError`` while it cannot answer (e.g. restarting)."""
    request = urllib.request.Request(f"{options.base_url.rstrip('/')}/models")
    if options.api_key:
        request.add_header("Authorization", f"Bearer {options.api_key}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return list(json.loads(response.read()).get("data") or [])


def serves(entries: list[dict[str, Any]], target: str, served_model: str | None) -> bool:
    """Whether an entry reports ``target`` as its root or id, under the name requests use."""
    return any(
        (served_model is None or entry.get("id") == served_model)
        and any(_same_model(entry.get(key), target) for key in ("root", "id"))
        for entry in entries
    )


def serving(options: GenerationOptions, target: str) -> bool:
    try:
        return serves(served_models(options), target, options.served_model)
    except (OSError, ValueError):
        return False


def _same_model(reported: Any, target: str) -> bool:
    if not isinstance(reported, str) or not reported:
        return False
    return reported == target or (Path(reported).exists() and str(Path(reported).resolve()) == target)


def run_reload_command(options: GenerationOptions, target: str) -> None:
    """Run the reload command for ``target``; a failure or a timeout is one line naming the flag and the output."""
    values = {"{model_dir}": target, "{base_url}": options.base_url or "", "{served_model}": options.served_model or ""}
    command = options.reload_command
    for placeholder, value in values.items():
        command = command.replace(placeholder, shlex.quote(value))
    env = {**os.environ, "SELFALIGN_MODEL_DIR": target, "SELFALIGN_BASE_URL": values["{base_url}"],
           "SELFALIGN_SERVED_MODEL": values["{served_model}"]}  # fmt: skip
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(["/bin/sh", "-c", command], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)  # fmt: skip
        try:
            code = process.wait(timeout=options.reload_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the shell and what it started in the foreground
            process.wait()
            raise UserError(
                f"--generation.reload_command did not finish in {options.reload_timeout:g} s for {target}; raise "
                f"--generation.reload_timeout or make it return once the server is restarting ({_tail(log)})"
            ) from None
        if code != 0:
            raise UserError(f"--generation.reload_command failed (exit {code}) for {target}: {_tail(log)}")


def _tail(log: Any) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    return f"its last output: {lines[-1][:200]}" if lines else "no output"


def wait_until_served(options: GenerationOptions, target: str, deadline: float, poll_s: float = 0.5) -> None:
    """Poll ``/v1/models`` until it reports ``target``; past ``deadline``, one line saying what it reports instead."""
    seen = "no answer"
    while time.monotonic() < deadline:
        try:
            entries = served_models(options)
        except (OSError, ValueError) as exc:  # a restarting server refuses connections for a while
            seen = f"no answer ({type(exc).__name__})"
        else:
            if serves(entries, target, options.served_model):
                return
            seen = ", ".join(f"id {e.get('id')!r} root {e.get('root')!r}" for e in entries) or "no model"
        time.sleep(poll_s)
    raise UserError(
        f"{options.base_url} did not serve {target} within --generation.reload_timeout "
        f"{options.reload_timeout:g} s after --generation.reload_command (it reports: {seen}); the server must list "
        "the folder as a model's root or id in /v1/models, else set --generation.reload_wait false"
    )
