"""The openai engine over real HTTP on loopback, against server processes this test starts.

Two servers: ``python -m lightning_selfalign.serve`` serving the tiny model (the engine must return what the
hf engine returns in-process, since both sample each request with its own seed), and a scripted server
(this file run as a script) that answers with canned valid few-shot answers and injects faults on demand:
slow answers (to observe concurrency), 5xx, hangs past the client timeout, 404 for an unknown model.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve()


# ---------------------------------------------------------------- the scripted server (run as a script)


def canned_answer(body: dict) -> tuple[str, str]:
    """A valid answer for the stage the prompt asks for (the few-shot pool's own answers), by seed.

    Every ``--junk_every``-th seed gets an unparseable answer and every ``--length_every``-th a cut-off
    one, so stage runs see both drop reasons.
    """
    from lightning_selfalign.prompts import load_examples
    from lightning_selfalign.prompts.render import render_answer

    if body.get("prompt", "").endswith("My answer is:"):  # the seeds stage's docstring judge
        return judge_answer(body["prompt"]), "stop"
    stage, layout = prompt_stage(body)
    seed = int(body.get("seed") or 0)
    examples = load_examples()
    if ARGS.junk_every and seed % ARGS.junk_every == 0:
        return {"concepts": "", "instructions": " ", "responses": "I cannot solve this."}[stage], "stop"
    if ARGS.length_every and seed % ARGS.length_every == 1:
        return "a cut-off answer", "length"
    return render_answer(stage, examples[seed % len(examples)], layout), "stop"


def judge_answer(prompt: str) -> str:
    """The docstring judge's verdict on the last description in the prompt: Yes from six words up."""
    description = prompt.rsplit("```", 2)[-2]
    return " Yes" if len(description.split()) >= 6 else " No"


# How each format's query starts (chat) and its prompt ends (completion), by stage.
QUERY_STARTS = {
    ("concepts", "selfalign-v1"): "[seed]", ("instructions", "selfalign-v1"): "[properties]",
    ("responses", "selfalign-v1"): "[task]", ("concepts", "starcoder2-instruct"): "### Snippet",
    ("instructions", "starcoder2-instruct"): "### Property\n", ("responses", "starcoder2-instruct"): "### Instruction",
    ("instructions", "selfcodealign"): "### Properties", ("responses", "selfcodealign"): "<instruction>",
}  # fmt: skip


def prompt_stage(body: dict):
    """The stage and prompt format a request is in, told by its last query; a response for anything else."""
    from lightning_selfalign.prompts import get_format

    if "messages" in body:
        query = body["messages"][-1]["content"]
    else:
        query = re.split(r"\n#{2,3} Example \d+\n", body["prompt"])[-1]
    for (stage, name), start in QUERY_STARTS.items():
        if query.startswith(start):
            return stage, get_format(name)
    return "responses", get_format("selfalign-v1")  # any other prompt (evaluation, the tests' own) gets a response


class State:
    lock = threading.Lock()
    inflight = 0
    max_inflight = 0
    attempts: Counter = Counter()
    counts: Counter = Counter()


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.endswith("/stats"):
            with State.lock:
                self._send(200, {"max_inflight": State.max_inflight, **State.counts})
        else:
            self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = json.dumps([body.get("seed"), body.get("prompt"), body.get("messages")])
        with State.lock:
            State.inflight += 1
            State.max_inflight = max(State.max_inflight, State.inflight)
            attempt = State.attempts[key]
            State.attempts[key] += 1
            State.counts["requests"] += 1
        try:
            if body.get("model") == "no-such-model":
                self._send(404, {"error": {"message": "model 'no-such-model' does not exist"}})
                return
            if ARGS.reject_system and any(m.get("role") == "system" for m in body.get("messages", [])):
                State.counts["system_refused"] += 1
                self._send(400, {"error": {"message": "Conversation roles must alternate user/assistant"}})
                return
            if body.get("max_tokens", 1) > 100_000:
                self._send(400, {"error": {"message": "max_tokens is too large"}})
                return
            if attempt < ARGS.hang_first:
                State.counts["hung"] += 1
                time.sleep(ARGS.hang_s)
            elif attempt < ARGS.hang_first + ARGS.fail_first:
                State.counts["failed"] += 1
                self._send(ARGS.fail_status, {"error": {"message": "injected failure"}})
                return
            time.sleep(ARGS.delay)
            text, reason = canned_answer(body)
            choice = {"index": 0, "finish_reason": reason}
            choice.update({"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text})
            self._send(200, {"choices": [choice], "usage": {"completion_tokens": len(text.split())}})
        finally:
            with State.lock:
                State.inflight -= 1


def run_scripted_server() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    server.daemon_threads = True
    print(f"serving scripted on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name, default in (("delay", 0.0), ("hang_s", 0.0)):
        parser.add_argument(f"--{name}", type=float, default=default)
    for name, default in (
        ("fail_first", 0),
        ("hang_first", 0),
        ("fail_status", 500),
        ("junk_every", 0),
        ("length_every", 0),
        ("reject_system", 0),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args(argv)


ARGS = _parse_args([])


# ---------------------------------------------------------------- fixtures and helpers


class ServerProcess:
    """A server subprocess; ``url`` is read from the first line it prints."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:  # read lazily, so the test can work while the server starts
            line = self.process.stdout.readline()
            if " on http" not in line:
                self.process.kill()
                raise RuntimeError(f"server did not start: {line!r} {self.process.stderr.read()[-2000:]}")
            self._url = line.strip().rsplit(" ", 1)[1]
        return self._url

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def scripted(**options: float) -> ServerProcess:
    args = [f"--{key}={value}" for key, value in options.items()]
    return ServerProcess([sys.executable, str(SCRIPT), *args])


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


if __name__ == "__main__":
    ARGS = _parse_args(sys.argv[1:])
    run_scripted_server()


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
