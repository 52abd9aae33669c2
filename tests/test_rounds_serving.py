"""Served models follow the weights: ``selfalign serve --allow_reload true`` on loopback switches to another folder
only when told (SGLang's ``POST /update_weights_from_disk``), and a round's engine (``round_engine``) runs
``--generation.reload_command`` first, so what it generates after the reload comes from the new weights. Failures of
the hook (exit code, timeout, a server that never reports the folder) are one-line errors.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ServerProcess, scripted

from lightning_selfalign.engines import EngineOptions, Request, Sampling, load_engine
from lightning_selfalign.errors import UserError
from lightning_selfalign.rounds import GenerationOptions, RoundSettings, round_engine
from lightning_selfalign.rounds.serving import serve_model, served_models

# What a user would write for SGLang or selfalign serve, as Python so the test needs no curl.
POST_RELOAD = (
    "import json, os, urllib.request as u; u.urlopen(u.Request(os.environ['SELFALIGN_BASE_URL'] + "
    "'/update_weights_from_disk', json.dumps({'model_path': os.environ['SELFALIGN_MODEL_DIR']}).encode(), "
    "{'Content-Type': 'application/json'}), timeout=120)"
)
REQUESTS = [Request(text=f"def f{i}(x):\n    ", messages=None, stop=("\n\n",), seed=i) for i in range(3)]
SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=8)


def other_model(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with every weight shifted: same tokenizer, other completions."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(folder)
    return folder


def local(model_dir: Path) -> list:
    engine = load_engine("hf", str(model_dir), EngineOptions())
    try:
        return engine.generate(REQUESTS, SAMPLING)
    finally:
        engine.close()


@pytest.mark.timeout(300)
def test_round_engine_reloads_the_server_and_generates_with_the_new_weights(tiny_model_dir, tmp_path):
    first, second = tiny_model_dir, other_model(tiny_model_dir, tmp_path / "round-0-model")
    expected_first, expected_second = local(first), local(second)
    assert expected_first != expected_second, "the two models must write different completions"
    server = ServerProcess([sys.executable, "-m", "lightning_selfalign.serve", f"--model={first}", "--port=0",
                            "--served_model_name=tiny", "--allow_reload=true", "--batch_size=4"])  # fmt: skip
    calls = tmp_path / "reload-calls"
    try:
        options = GenerationOptions(
            engine="openai", base_url=server.url, served_model="tiny",
            reload_command=f"echo {{model_dir}} >> {calls} && {sys.executable} -c \"{POST_RELOAD}\"",
        )  # fmt: skip
        plain = load_engine("openai", "tiny", EngineOptions(base_url=server.url))
        assert plain.generate(REQUESTS, SAMPLING) == expected_first, "before any reload the server serves its model"

        engine = round_engine(str(first), options)
        assert engine.get().generate(REQUESTS, SAMPLING) == expected_first
        engine.close()
        assert not calls.exists(), "a server already serving the model is not reloaded"
        assert plain.generate(REQUESTS, SAMPLING) == expected_first, "a new folder alone changes nothing"

        engine = round_engine(str(second), options)
        assert engine.get().generate(REQUESTS, SAMPLING) == expected_second
        engine.close()
        assert calls.read_text().split() == [str(second.resolve())]
        [card] = served_models(options)
        assert (card["id"], card["root"]) == ("tiny", str(second.resolve()))
        assert plain.generate(REQUESTS, SAMPLING) == expected_second, "every client now gets the new weights"

        serve_model(str(second), options)
        assert len(calls.read_text().split()) == 1, "serving the same model again runs no command"
        serve_model(str(first), options)
        assert plain.generate(REQUESTS, SAMPLING) == expected_first, "a rollback serves the earlier model again"
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_reload_failures_are_one_line_errors(tmp_path):
    server = scripted()  # lists model "scripted" and never reloads
    try:
        options = GenerationOptions(engine="openai", base_url=server.url, served_model="scripted", reload_timeout=1.5)
        folder = tmp_path / "model"
        folder.mkdir()

        def error(command: str) -> str:
            options.reload_command = command
            started = time.monotonic()
            with pytest.raises(UserError) as raised:
                serve_model(str(folder), options, poll_s=0.1)
            assert time.monotonic() - started < 15, "a failed reload must not hang"
            message = str(raised.value)
            assert "\n" not in message
            return message

        message = error("echo loading {model_dir}; echo out of memory >&2; exit 3")
        assert "--generation.reload_command failed (exit 3)" in message and "out of memory" in message
        message = error("sleep 30")
        assert "did not finish in 1.5 s" in message and "--generation.reload_timeout" in message
        # A command that starts something in the background returns at once; the wait then gives up, saying why.
        message = error("sleep 5 & echo started")
        assert f"did not serve {folder.resolve()}" in message and "id 'scripted'" in message
    finally:
        server.stop()


def test_reload_options_are_checked_at_construction(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("{}\n")
    settings = RoundSettings(
        model="m", train_config=str(config),
        generation=GenerationOptions(engine="hf", reload_command="true", reload_timeout=0),
    )  # fmt: skip
    problems = settings.problems()
    assert any(p.startswith("--generation.reload_command reloads an OpenAI-compatible server") for p in problems)
    assert "--generation.reload_timeout must be > 0 seconds, got 0" in problems
