"""The openai engine over real HTTP on loopback, against server processes this test starts.

Two servers: ``python -m lightning_selfalign.serve`` serving the tiny model (the engine must return what the
hf engine returns in-process, since both sample each request with its own seed), and the scripted server
(``scripted_server.py``) that answers with canned valid few-shot answers and injects faults on demand:
slow answers (to observe concurrency), 5xx, hangs past the client timeout, 404 for an unknown model.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from helpers import ServerProcess, scripted

# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requests_for(count: int):
    from lightning_selfalign.engines import Request

    return [Request(text=f"def f{i}(x):\n[response]\n", messages=None, stop=("[end]",), seed=i) for i in range(count)]


# ---------------------------------------------------------------- tests


@pytest.mark.timeout(300)
def test_served_tiny_model_matches_the_hf_engine(tiny_model_dir):
    from lightning_selfalign.engines import EngineOptions, Request, Sampling, load_engine

    server = ServerProcess(
        [sys.executable, "-m", "lightning_selfalign.serve", f"--model={tiny_model_dir}", "--port=0", "--batch_size=4"]
    )
    try:
        requests = [Request(text=f"def f{i}(x):\n    ", messages=None, stop=("\n\n",), seed=i) for i in range(4)]
        system = {"role": "system", "content": "You write Python."}  # the tiny template has no system role
        requests += [
            Request(text=None, messages=[system, {"role": "user", "content": f"Write f{i}."}], stop=(), seed=i)
            for i in range(2)
        ]
        sampling = Sampling(temperature=0.7, top_p=0.95, max_new_tokens=8)
        local = load_engine("hf", str(tiny_model_dir)).generate(requests, sampling)
        remote = load_engine("openai", None, EngineOptions(base_url=server.url, concurrency=3))
        assert remote.model == str(tiny_model_dir), "the engine asks the server for its model when --model is absent"
        served = remote.generate(requests, sampling)
        assert served == local
        assert {c.finish_reason for c in served} <= {"stop", "length"}
        assert all(c.num_tokens > 0 and c.prompt_tokens > 0 for c in served)  # usage reports both, as local counts
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_concurrency_is_bounded():
    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine

    server = scripted(delay=0.3)
    try:
        engine = load_engine("openai", "scripted", EngineOptions(base_url=server.url, concurrency=3))
        completions = engine.generate(requests_for(12), Sampling(max_new_tokens=64))
        stats = server.stats()
        assert stats["requests"] == 12
        assert stats["max_inflight"] == 3, stats
        assert all(c.finish_reason == "stop" and c.text for c in completions)
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_retries_after_5xx_and_timeouts_succeed():
    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine

    server = scripted(hang_first=1, hang_s=3, fail_first=2, fail_status=503)
    try:
        options = EngineOptions(base_url=server.url, concurrency=4, request_timeout=0.5, max_retries=4)
        engine = load_engine("openai", "scripted", options)
        engine.backoff_s = 0.05
        completions = engine.generate(requests_for(4), Sampling(max_new_tokens=64))
        stats = server.stats()
        assert stats["hung"] == 4 and stats["failed"] == 8, stats
        assert engine.counters["retries"] >= 12, "one per scripted failure (a loaded machine can time out more)"
        assert all(c.finish_reason == "stop" and c.text for c in completions)
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_retries_run_out_with_one_clear_error():
    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine
    from lightning_selfalign.errors import UserError

    server = scripted(fail_first=10)
    try:
        engine = load_engine("openai", "scripted", EngineOptions(base_url=server.url, max_retries=2))
        engine.backoff_s = 0.01
        with pytest.raises(UserError, match=r"failed 3 times \(last: HTTP 500"):
            engine.generate(requests_for(1), Sampling())
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_client_errors_are_not_retried():
    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine
    from lightning_selfalign.errors import UserError

    server = scripted()
    try:
        engine = load_engine("openai", "no-such-model", EngineOptions(base_url=server.url))
        with pytest.raises(UserError, match="refused the request .HTTP 404.*check --model"):
            engine.generate(requests_for(1), Sampling())
        assert server.stats()["requests"] == 1
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_system_turn_is_folded_when_the_server_refuses_it():
    from lightning_selfalign.engines import EngineOptions, Request, Sampling, load_engine
    from lightning_selfalign.errors import UserError

    server = scripted(reject_system=1)
    try:
        engine = load_engine("openai", "scripted", EngineOptions(base_url=server.url, concurrency=4))
        messages = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "[task]\nWrite f."}]
        chats = [Request(text=None, messages=messages, seed=k) for k in range(6)]
        assert all(c.text for c in engine.generate(chats, Sampling()))
        assert engine.fold_system_turn and 1 <= server.stats()["system_refused"] <= 4
        with pytest.raises(UserError, match="refused the request .HTTP 400: max_tokens is too large"):
            engine.generate(chats[:1], Sampling(max_new_tokens=200_000))
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_server_down_is_one_line_error_from_the_cli(tmp_path):
    rows = tmp_path / "seeds.jsonl"
    rows.write_text(json.dumps({"id": "s1", "seed": "def f(x):\n    return x\n"}) + "\n")
    url = f"http://127.0.0.1:{free_port()}/v1"
    command = [sys.executable, "-m", "lightning_selfalign", "generate", "--stage=concepts", f"--input={rows}",
               f"--output={tmp_path / 'out.jsonl'}", "--engine=openai", "--model=m", f"--base_url={url}",
               "--max_retries=1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the OpenAI-compatible server at {url} failed 2 times")
    assert "APIConnectionError" in lines[0] and "start it or fix --base_url" in lines[0]


@pytest.mark.timeout(300)
def test_served_model_streams_with_the_openai_client_and_refuses_other_model_names(tiny_model_dir):
    import openai

    server = ServerProcess([sys.executable, "-m", "lightning_selfalign.serve", f"--model={tiny_model_dir}",
                            "--port=0", "--served_model_name=tiny"])  # fmt: skip
    try:
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        asked = dict(model="tiny", prompt="def f(x):\n", max_tokens=24, temperature=0.7, seed=3)
        whole = client.completions.create(**asked).choices[0]
        chunks = list(client.completions.create(**asked, stream=True))
        assert len(chunks) >= 2, "text chunks, then the finish reason"
        assert "".join(c.choices[0].text for c in chunks) == whole.text
        assert chunks[-1].choices[0].finish_reason == whole.finish_reason
        messages = [{"role": "user", "content": "Write f."}]
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, seed=1)
        streamed = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, seed=1,
                                                       stream=True))  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == reply.choices[0].message.content
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
        assert [m.id for m in client.models.list()] == ["tiny"]
    finally:
        server.stop()
