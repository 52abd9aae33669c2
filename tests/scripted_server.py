"""A scripted OpenAI-compatible server for the tests, run as a script: ``python tests/scripted_server.py [options]``.

It prints ``serving scripted on http://127.0.0.1:PORT/v1`` and answers with canned valid few-shot answers (by
per-sample seed), injecting faults on demand: slow answers (to observe concurrency), 5xx, hangs past the client
timeout, 404 for an unknown model, 400 for a system turn. ``GET /stats`` reports what it saw. ``helpers.scripted``
starts it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    """What the server has seen so far, shared by its handler threads (``GET /stats`` reports it)."""

    lock = threading.Lock()
    inflight = 0
    max_inflight = 0
    attempts: Counter = Counter()
    counts: Counter = Counter()


class ScriptedHandler(BaseHTTPRequestHandler):
    """Lists one model, ``scripted``, and answers completions and chat completions with the faults ``ARGS`` asks for."""

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
    """Serve on a free loopback port until killed; the first line printed names the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    server.daemon_threads = True
    print(f"serving scripted on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The fault options, each off by default: ``helpers.scripted(delay=0.3, fail_first=2, ...)`` passes them."""
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


ARGS = parse_args([])


if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    run_scripted_server()
